"""Listing the input as shards: fixed-size groups of records with stable keys, in sorted order."""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass
from typing import Any, Mapping

from pipeline.storage import filesystem

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
_GLOB_CHARS = "*?["


@dataclass(frozen=True)
class Record:
    key: str  # stable id: the path relative to the input folder (or glob root)
    uri: str  # where its bytes are


@dataclass(frozen=True)
class Shard:
    index: int
    records: tuple[Record, ...]

    @property
    def name(self) -> str:
        return f"shard-{self.index:05d}"

    @property
    def fingerprint(self) -> str:
        """Hash of the shard's keys: a committed shard whose input listing changed is detected by it."""
        return hashlib.sha256("\n".join(r.key for r in self.records).encode()).hexdigest()


class InputError(ValueError):
    """The input cannot be listed; the message names the URI."""


def _static_prefix(pattern: str) -> str:
    """The folder part of a glob before its first wildcard."""
    head = pattern
    for ch in _GLOB_CHARS:
        head = head.split(ch, 1)[0]
    return head.rsplit("/", 1)[0] if "/" in head else ""


def _list_one(uri: str, storage_options: Mapping[str, Any]) -> list[Record]:
    fs, path = filesystem(uri, storage_options)
    try:
        if any(ch in path for ch in _GLOB_CHARS):
            root = _static_prefix(path)
            paths = [p for p in fs.glob(path) if not fs.isdir(p)]
        elif fs.isdir(path):
            root = path.rstrip("/")
            paths = [p for p in fs.find(path) if p.lower().endswith(IMAGE_EXTENSIONS)]
        elif fs.exists(path):
            root, paths = posixpath.dirname(path.rstrip("/")), [path]
        else:
            raise InputError(f"input {uri} does not exist")
    except InputError:
        raise
    except (OSError, PermissionError) as e:
        raise InputError(f"cannot list input {uri}: {e}") from e
    records = []
    for p in paths:
        key = posixpath.relpath(p, root) if root else p
        records.append(Record(key=key, uri=fs.unstrip_protocol(p)))
    return records


def list_image_shards(uris: str | list[str], shard_size: int, storage_options: Mapping[str, Any]) -> list[Shard]:
    """All image files under the URIs, sorted by key and cut into shards of ``shard_size``."""
    records: dict[str, Record] = {}
    for uri in [uris] if isinstance(uris, str) else uris:
        for record in _list_one(uri, storage_options):
            if record.key in records and records[record.key].uri != record.uri:
                raise InputError(
                    f"two input files have the key {record.key!r}: {records[record.key].uri} and {record.uri}"
                )
            records[record.key] = record
    if not records:
        raise InputError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found under {uris}")
    ordered = [records[k] for k in sorted(records)]
    return [
        Shard(index=i, records=tuple(ordered[start : start + shard_size]))
        for i, start in enumerate(range(0, len(ordered), shard_size))
    ]
