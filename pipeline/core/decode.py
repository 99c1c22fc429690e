"""Reading and decoding a shard's images on a CPU worker. A bad record becomes a reject, never an error."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, TypeVar

import numpy as np
from PIL import Image

from pipeline.core.formats import Blob, input_format
from pipeline.core.image_formats import DEFAULT_FORMATS, extensions, open_rgb
from pipeline.core.payloads import Prepared
from pipeline.core.shards import IMAGE_EXTENSIONS, Shard

T = TypeVar("T")


@dataclass
class DecodedShard:
    keys: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    images: np.ndarray | None = None  # uint8 [N, S, S, 3] of the records that decoded
    rejects: list[tuple[str, str, str]] = field(default_factory=list)  # (key, source, error)


def decode_image(
    data: bytes,
    size: int,
    resize: bool,
    convert_to_rgb: bool,
    formats: tuple[str, ...] = DEFAULT_FORMATS,
    fast_jpeg: bool = False,
) -> np.ndarray:
    """Bytes of one of ``formats`` -> uint8 RGB [size, size, 3], as a viewer shows the picture (EXIF
    orientation applied). Raises ValueError with a reason for anything unusable. With ``fast_jpeg`` (and
    ``resize``) a JPEG larger than ``size`` is decoded at a reduced scale first (``open_image``'s
    ``draft_size``), then resized as any other picture."""
    try:
        img = open_rgb(data, formats, convert_to_rgb, size if fast_jpeg and resize else None)
        if img.size != (size, size):
            if not resize:
                raise ValueError(
                    f"image is {img.size[0]}x{img.size[1]}, expected {size}x{size} (set input.resize to resize)"
                )
            img = img.resize((size, size), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8)
    except ValueError:
        raise
    except Exception as e:  # PIL raises many types for bad data (OSError, SyntaxError, DecompressionBombError...)
        raise ValueError(f"cannot decode image: {type(e).__name__}: {e}") from None


def read_and_decode(
    shard: Shard,
    size: int,
    resize: bool,
    convert_to_rgb: bool,
    storage_options: Mapping[str, Any],
    image_column: str = "image",
    key_column: str | None = None,
    only: frozenset[str] | None = None,
    formats: tuple[str, ...] = DEFAULT_FORMATS,
    threads: int = 1,
    fast_jpeg: bool = False,
) -> DecodedShard:
    """Decode every record of the shard, or only those whose keys are in ``only`` (a retry of rejects),
    ``threads`` images at a time."""
    out = DecodedShard()
    out.keys, out.sources, out.rejects, images = decode_records(
        shard, storage_options, image_column, key_column, formats, only,
        lambda blob: decode_image(blob, size, resize, convert_to_rgb, formats, fast_jpeg), threads,
    )
    out.images = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
    return out


def decode_records(
    shard: Shard,
    storage_options: Mapping[str, Any],
    image_column: str,
    key_column: str | None,
    formats: tuple[str, ...],
    only: frozenset[str] | None,
    decode: Callable[[bytes], T],
    threads: int = 1,
) -> tuple[list[str], list[str], list[tuple[str, str, str]], list[T]]:
    """(keys, sources, rejects, decoded values) of the shard's records (or those in ``only``), in order,
    each record's bytes through ``decode``, ``threads`` at a time (Pillow's codecs and resampling release
    the GIL). A record that cannot be read or decoded becomes a reject with the reason."""
    if only is not None:
        shard = input_format(shard.format).only(shard, only)
    records = (
        read_records(shard, storage_options, image_column, key_column, extensions(formats))
        if shard.records or shard.source
        else ()
    )
    wanted = (r for r in records if only is None or r[0] in only)

    def one(record: tuple[str, str, Blob]) -> tuple[T | None, str | None]:
        _, _, blob = record
        if isinstance(blob, BaseException):
            return None, str(blob) if isinstance(blob, ValueError) else f"cannot read: {type(blob).__name__}: {blob}"
        try:
            return decode(blob), None
        except ValueError as e:
            return None, str(e)
        except Exception as e:  # PIL raises many types for bad data
            return None, f"cannot decode: {type(e).__name__}: {e}"

    def results():
        if threads <= 1:
            yield from ((r, one(r)) for r in wanted)
            return
        with ThreadPoolExecutor(threads) as pool:  # map keeps the records' order
            listed = list(wanted)
            yield from zip(listed, pool.map(one, listed))

    keys, sources, rejects, values = [], [], [], []
    for (key, source, _), (value, why) in results():
        if why is not None:
            rejects.append((key, source, why))
            continue
        keys.append(key)
        sources.append(source)
        values.append(value)
    return keys, sources, rejects, values


def read_records(
    shard: Shard,
    storage_options: Mapping[str, Any],
    image_column: str = "image",
    key_column: str | None = None,
    image_extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
) -> Iterator[tuple[str, str, Blob]]:
    """(key, source, bytes or error) for every record of a shard, in order. A WebDataset sample's image is
    its first member with one of ``image_extensions``."""
    return input_format(shard.format).read(shard, storage_options, image_column, key_column, image_extensions)


def decode_shard(
    shard: Shard, size: int, input_spec: Mapping[str, Any], only: frozenset[str] | None, resize: bool | None = None
) -> DecodedShard:
    """``read_and_decode`` with the input section's settings (``pipeline.core.job.input_args``)."""
    return read_and_decode(
        shard,
        size,
        input_spec["resize"] if resize is None else resize,
        input_spec["convert_to_rgb"],
        input_spec["storage_options"],
        input_spec["image_column"],
        input_spec["key_column"],
        only,
        tuple(input_spec.get("formats", DEFAULT_FORMATS)),
        input_spec.get("decode_threads", 1),
        input_spec.get("fast_jpeg", False),
    )


@dataclass(frozen=True)
class DecodeImages:
    """A job's prepare step for RGB image input: a shard read and decoded as (keys, sources, rejects) and
    uint8 RGB [N, size, size, 3], with the input section's settings (``pipeline.core.job.input_args``)."""

    size: int
    input_spec: Mapping[str, Any]

    def __call__(self, shard: Shard, only: frozenset | None) -> tuple[Prepared, Any]:
        decoded = decode_shard(shard, self.size, self.input_spec, only)
        return Prepared(decoded.keys, decoded.sources, decoded.rejects), decoded.images
