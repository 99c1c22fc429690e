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
    format: str  # "images", "webdataset" or "parquet"
    # images: the files of the shard. webdataset / parquet: empty; the shard is the file ``source``, and
    # its records are found when it is read.
    records: tuple[Record, ...] = ()
    source: str = ""
    size: int = 0  # bytes of ``source``

    @property
    def name(self) -> str:
        return f"shard-{self.index:05d}"

    @property
    def first(self) -> str:
        """The shard's first key or its file, to name it in messages."""
        return self.records[0].key if self.records else self.source

    @property
    def fingerprint(self) -> str:
        """Hash of what the shard reads: a committed shard whose input changed is detected by it."""
        text = "\n".join(r.key for r in self.records) if self.records else f"{self.source}\n{self.size}"
        return hashlib.sha256(text.encode()).hexdigest()


class InputError(ValueError):
    """The input cannot be listed; the message names the URI."""


def _static_prefix(pattern: str) -> str:
    """The folder part of a glob before its first wildcard."""
    head = pattern
    for ch in _GLOB_CHARS:
        head = head.split(ch, 1)[0]
    return head.rsplit("/", 1)[0] if "/" in head else ""


def _list_one(uri: str, storage_options: Mapping[str, Any], extensions: tuple[str, ...]) -> list[Record]:
    fs, path = filesystem(uri, storage_options)
    try:
        if any(ch in path for ch in _GLOB_CHARS):
            root = _static_prefix(path)
            paths = [p for p in fs.glob(path) if not fs.isdir(p)]
        elif fs.isdir(path):
            root = path.rstrip("/")
            paths = [p for p in fs.find(path) if p.lower().endswith(extensions)]
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


def _list_files(uris: str | list[str], storage_options: Mapping[str, Any], extensions: tuple[str, ...]) -> list[Record]:
    records: dict[str, Record] = {}
    for uri in [uris] if isinstance(uris, str) else uris:
        for record in _list_one(uri, storage_options, extensions):
            if record.key in records and records[record.key].uri != record.uri:
                raise InputError(
                    f"two input files have the key {record.key!r}: {records[record.key].uri} and {record.uri}"
                )
            records[record.key] = record
    if not records:
        raise InputError(f"no {', '.join(extensions)} files found under {uris}")
    return [records[k] for k in sorted(records)]


def list_shards(
    uris: str | list[str], format: str, shard_size: int, storage_options: Mapping[str, Any]
) -> list[Shard]:
    """The input as shards, in sorted order.

    images: every image file, cut into groups of ``shard_size``. webdataset: one shard per .tar file.
    parquet: one shard per .parquet file.
    """
    if format == "images":
        ordered = _list_files(uris, storage_options, IMAGE_EXTENSIONS)
        return [
            Shard(index=i, format=format, records=tuple(ordered[start : start + shard_size]))
            for i, start in enumerate(range(0, len(ordered), shard_size))
        ]
    extensions = {"webdataset": (".tar",), "parquet": (".parquet",)}.get(format)
    if extensions is None:
        raise InputError(f"unknown input format {format!r}; known: images, webdataset, parquet")
    files = _list_files(uris, storage_options, extensions)
    shards = []
    for i, record in enumerate(files):
        fs, path = filesystem(record.uri, storage_options)
        shards.append(Shard(index=i, format=format, source=record.uri, size=int(fs.size(path) or 0)))
    return shards
