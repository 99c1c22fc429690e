"""Reading and decoding a shard's images on a CPU worker. A bad record becomes a reject, never an error."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
from PIL import Image

from pipeline.shards import Shard
from pipeline.storage import filesystem


@dataclass
class DecodedShard:
    keys: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    images: np.ndarray | None = None  # uint8 [N, S, S, 3] of the records that decoded
    rejects: list[tuple[str, str, str]] = field(default_factory=list)  # (key, source, error)


def decode_image(data: bytes, size: int, resize: bool, convert_to_rgb: bool) -> np.ndarray:
    """Bytes -> uint8 RGB [size, size, 3]. Raises ValueError with a reason for anything unusable."""
    if not data:
        raise ValueError("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # decodes fully, so truncated files fail here and not later
            if img.mode != "RGB":
                if not convert_to_rgb:
                    raise ValueError(f"image mode is {img.mode}, expected RGB (set input.convert_to_rgb to convert)")
                img = img.convert("RGB")
            if img.size != (size, size):
                if not resize:
                    raise ValueError(
                        f"image is {img.size[0]}x{img.size[1]}, expected {size}x{size} (set input.resize to resize)"
                    )
                img = img.resize((size, size), Image.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except ValueError:
        raise
    except Exception as e:  # PIL raises many types for bad data (UnidentifiedImageError, OSError, SyntaxError...)
        raise ValueError(f"cannot decode image: {type(e).__name__}: {e}") from None


def read_and_decode(
    shard: Shard, size: int, resize: bool, convert_to_rgb: bool, storage_options: Mapping[str, Any]
) -> DecodedShard:
    out = DecodedShard()
    images = []
    fs, _ = filesystem(shard.records[0].uri, storage_options)
    paths = [fs._strip_protocol(r.uri) for r in shard.records]
    # One concurrent fetch for the whole shard (object stores serve many small files slowly one by one).
    blobs = fs.cat(paths, on_error="return") if len(paths) > 1 else {paths[0]: _cat_one(fs, paths[0])}
    for record, path in zip(shard.records, paths):
        blob = blobs.get(path, FileNotFoundError(path))
        try:
            if isinstance(blob, BaseException):
                raise ValueError(f"cannot read file: {type(blob).__name__}: {blob}")
            images.append(decode_image(blob, size, resize, convert_to_rgb))
        except ValueError as e:
            out.rejects.append((record.key, record.uri, str(e)))
            continue
        out.keys.append(record.key)
        out.sources.append(record.uri)
    out.images = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
    return out


def _cat_one(fs, path: str) -> bytes | BaseException:
    try:
        return fs.cat_file(path)
    except Exception as e:  # reported as this record's reject
        return e
