"""Reading and decoding a shard's images on a CPU worker. A bad record becomes a reject, never an error."""

from __future__ import annotations

import dataclasses
import posixpath
import tarfile
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from pipeline.image_formats import DEFAULT_FORMATS, extensions, open_rgb
from pipeline.shards import IMAGE_EXTENSIONS, Shard
from pipeline.storage import filesystem


@dataclass
class DecodedShard:
    keys: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    images: np.ndarray | None = None  # uint8 [N, S, S, 3] of the records that decoded
    rejects: list[tuple[str, str, str]] = field(default_factory=list)  # (key, source, error)


def decode_image(
    data: bytes, size: int, resize: bool, convert_to_rgb: bool, formats: tuple[str, ...] = DEFAULT_FORMATS
) -> np.ndarray:
    """Bytes of one of ``formats`` -> uint8 RGB [size, size, 3], as a viewer shows the picture (EXIF
    orientation applied). Raises ValueError with a reason for anything unusable."""
    try:
        img = open_rgb(data, formats, convert_to_rgb)
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
) -> DecodedShard:
    """Decode every record of the shard, or only those whose keys are in ``only`` (a retry of rejects)."""
    out = DecodedShard()
    images = []
    if only is not None and shard.format == "images":  # fetch only those files
        shard = dataclasses.replace(shard, records=tuple(r for r in shard.records if r.key in only))
    records = (
        read_records(shard, storage_options, image_column, key_column, extensions(formats))
        if shard.records or shard.source
        else ()
    )
    for key, source, blob in records:
        if only is not None and key not in only:
            continue
        try:
            if isinstance(blob, BaseException):
                why = str(blob) if isinstance(blob, ValueError) else f"cannot read: {type(blob).__name__}: {blob}"
                raise ValueError(why)
            images.append(decode_image(blob, size, resize, convert_to_rgb, formats))
        except ValueError as e:
            out.rejects.append((key, source, str(e)))
            continue
        out.keys.append(key)
        out.sources.append(source)
    out.images = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
    return out


Blob = bytes | BaseException  # a record's bytes, or why they could not be had


def read_records(
    shard: Shard,
    storage_options: Mapping[str, Any],
    image_column: str = "image",
    key_column: str | None = None,
    image_extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
) -> Iterator[tuple[str, str, Blob]]:
    """(key, source, bytes or error) for every record of a shard, in order. A WebDataset sample's image is
    its first member with one of ``image_extensions``."""
    if shard.format == "images":
        return _image_records(shard, storage_options)
    if shard.format == "webdataset":
        return _tar_records(shard, storage_options, image_extensions)
    return _parquet_records(shard, storage_options, image_column, key_column)


def _image_records(shard: Shard, storage_options: Mapping[str, Any]) -> Iterator[tuple[str, str, Blob]]:
    fs, _ = filesystem(shard.records[0].uri, storage_options)
    paths = [fs._strip_protocol(r.uri) for r in shard.records]
    # One concurrent fetch for the whole shard (object stores serve many small files slowly one by one).
    blobs = fs.cat(paths, on_error="return") if len(paths) > 1 else {paths[0]: _cat_one(fs, paths[0])}
    for record, path in zip(shard.records, paths):
        blob = blobs.get(path, FileNotFoundError(path))
        if isinstance(blob, BaseException):
            blob = ValueError(f"cannot read file: {type(blob).__name__}: {blob}")
        yield record.key, record.uri, blob


def _cat_one(fs, path: str) -> Blob:
    try:
        return fs.cat_file(path)
    except Exception as e:  # reported as this record's reject
        return e


def _tar_records(
    shard: Shard, storage_options: Mapping[str, Any], image_extensions: tuple[str, ...]
) -> Iterator[tuple[str, str, Blob]]:
    """WebDataset: members sharing a key (the path up to the first dot of the file name) form a sample;
    its first member with an image extension is the image. A record's key is the tar file's key (its path
    in the input), a slash, and the sample's key, so equal sample keys in two tars stay two records."""
    fs, path = filesystem(shard.source, storage_options)
    prefix = shard.key or posixpath.basename(path)
    samples: dict[str, tuple[str, bytes] | None] = {}
    broken = None
    try:
        with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
            for member in tar:
                name = member.name
                base = posixpath.basename(name)
                if not member.isfile() or base.startswith("."):
                    continue
                stem, _, extension = base.partition(".")
                key = posixpath.join(posixpath.dirname(name), stem)
                if samples.get(key) is None and f".{extension.lower()}" in image_extensions:
                    samples[key] = (name, tar.extractfile(member).read())
                else:
                    samples.setdefault(key, None)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        broken = e
    for sample, found in samples.items():
        key = f"{prefix}/{sample}"
        if found is None:
            yield key, shard.source, ValueError(f"sample has no image member ({', '.join(image_extensions)})")
        else:
            yield key, f"{shard.source}#{found[0]}", found[1]
    if broken is not None:
        yield (
            f"{prefix}#unreadable",
            shard.source,
            ValueError(f"tar file unreadable after {len(samples)} samples: {type(broken).__name__}: {broken}"),
        )


def _parquet_records(
    shard: Shard, storage_options: Mapping[str, Any], image_column: str, key_column: str | None
) -> Iterator[tuple[str, str, Blob]]:
    """Parquet: image bytes (or a {bytes, path} struct, as Hugging Face datasets store images) per row;
    the key from ``key_column``, else ``<file's path in the input>:<row>``. A key the file holds twice is
    a reject naming the row that has it first (``pipeline.runner`` refuses keys repeated across files)."""
    fs, path = filesystem(shard.source, storage_options)
    base = shard.key or posixpath.basename(path)
    columns = [image_column] + ([key_column] if key_column else [])
    row = 0
    first_row: dict[str, int] = {}
    with fs.open(path, "rb") as f:
        for batch in pq.ParquetFile(f).iter_batches(columns=columns, batch_size=256):
            images = batch.column(image_column).to_pylist()
            keys = batch.column(key_column).to_pylist() if key_column else [None] * len(images)
            for value, key in zip(images, keys):
                fallback = f"{base}:{row}"
                row += 1
                if key_column and key is None:
                    yield fallback, shard.source, ValueError(f"{key_column} is null")
                    continue
                if key_column and first_row.setdefault(str(key), row - 1) != row - 1:
                    yield (
                        fallback,
                        shard.source,
                        ValueError(f"{key_column} {str(key)!r} repeats the key of row {first_row[str(key)]}"),
                    )
                    continue
                if isinstance(value, dict):
                    value = value.get("bytes")
                if value is None:
                    blob: Blob = ValueError(f"{image_column} is null")
                elif isinstance(value, (bytes, bytearray)):
                    blob = bytes(value)
                else:
                    blob = ValueError(f"{image_column} holds {type(value).__name__}, expected image bytes")
                yield (str(key) if key_column else fallback), shard.source, blob
