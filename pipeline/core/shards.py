"""Listing the input as shards: fixed-size groups of records with stable keys, in sorted order."""

from __future__ import annotations

import dataclasses
import itertools
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import pyarrow.parquet as pq

from pipeline.core.errors import PreflightError
from pipeline.core.formats import input_format
from pipeline.core.payloads import ShardStats
from pipeline.core.image_formats import extensions
from pipeline.core.secrets import redact_uri
from pipeline.core.storage import filesystem, is_glob, is_local, static_prefix

IMAGE_EXTENSIONS = extensions()


@dataclass(frozen=True)
class Record:
    key: str  # stable id: the path relative to the input folder (or glob root)
    uri: str  # where its bytes are


@dataclass(frozen=True)
class Shard:
    index: int
    format: str  # a name of pipeline.core.formats.FORMATS
    # images: the files of the shard. webdataset / parquet: empty; the shard is the file ``source``, and
    # its records are found when it is read.
    records: tuple[Record, ...] = ()
    source: str = ""
    size: int = 0  # bytes of ``source``
    version: str = ""  # of ``source``: its ETag on object stores, its modification time on disks
    # webdataset / parquet: ``source``'s path relative to the input folder. It starts every record key of
    # the file, so that two files holding the same sample key or row give two keys.
    key: str = ""

    @property
    def name(self) -> str:
        return f"shard-{self.index:05d}"

    @property
    def first(self) -> str:
        """The shard's first key or its file, to name it in messages."""
        return self.records[0].key if self.records else redact_uri(self.source)


class InputError(ValueError):
    """The input cannot be listed; the message names the URI."""


def _list_one(uri: str, storage_options: Mapping[str, Any], extensions: tuple[str, ...]) -> list[Record]:
    fs, path = filesystem(uri, storage_options)
    pattern = is_glob(fs, path)
    fs.invalidate_cache(static_prefix(path) if pattern else path)  # see new files
    try:
        if pattern:
            root = static_prefix(path)
            paths = [p for p in fs.glob(path) if not fs.isdir(p)]
            if not paths:
                raise InputError(f"input {redact_uri(uri)} matches no files")
        elif fs.isdir(path):
            root = path.rstrip("/")
            paths = [p for p in fs.find(path) if p.lower().endswith(extensions)]
        elif fs.exists(path):
            root, paths = posixpath.dirname(path.rstrip("/")), [path]
        else:
            raise InputError(f"input {redact_uri(uri)} does not exist")
    except InputError:
        raise
    except (OSError, PermissionError) as e:
        raise InputError(f"cannot list input {redact_uri(uri)}: {e}") from e
    records = []
    for p in paths:
        # A URL's query (a presigned signature) is how to read the file, not part of its name.
        named, base = (p, root) if is_local(fs) else (p.split("?", 1)[0], root.split("?", 1)[0])
        key = posixpath.relpath(named, base) if base else named
        records.append(Record(key=key, uri=fs.unstrip_protocol(p)))
    return records


def _list_files(uris: str | list[str], storage_options: Mapping[str, Any], extensions: tuple[str, ...]) -> list[Record]:
    records: dict[str, Record] = {}
    for uri in [uris] if isinstance(uris, str) else uris:
        for record in _list_one(uri, storage_options, extensions):
            if record.key in records and records[record.key].uri != record.uri:
                raise InputError(
                    f"two input files have the key {record.key!r}: {redact_uri(records[record.key].uri)} "
                    f"and {redact_uri(record.uri)}"
                )
            records[record.key] = record
    if not records:
        shown = redact_uri(uris) if isinstance(uris, str) else [redact_uri(u) for u in uris]
        raise InputError(f"no {', '.join(extensions)} files found under {shown}")
    return [records[k] for k in sorted(records)]


def shard_inputs(shard: Shard) -> dict:
    """What a shard read, recorded in its stats so that later runs know which input is already done."""
    return input_format(shard.format).recorded(shard)


def assign_shards(
    listing: list[Shard], format: str, shard_size: int, committed: Mapping[str, ShardStats]
) -> tuple[list[Shard], list[str]]:
    """The shards of a run: committed shards keep what they read, and input that no committed shard read
    (new files, or shards an interrupted run did not commit) is cut into new shards, in sorted order, under
    the lowest free indices. Files arriving between runs therefore never move finished work. ``listing`` is ``list_shards(...)`` of the whole input.

    Returns (every shard, by index; names of committed shards some of whose input is gone).
    Raises InputError for a committed file that was rewritten (its size changed).
    """
    shards, gone, covered = [], [], set()
    if input_format(format).records_listed:
        by_key = {r.key: r for shard in listing for r in shard.records}
        for name, stats in sorted(committed.items()):
            keys = _recorded(name, stats, "inputs")
            present = tuple(by_key[k] for k in keys if k in by_key)
            if len(present) < len(keys):
                gone.append(name)
            covered.update(keys)
            shards.append(Shard(index=_index(name), format=format, records=present))
        fresh = [r for r in sorted(by_key.values(), key=lambda r: r.key) if r.key not in covered]
        groups = [tuple(fresh[j : j + shard_size]) for j in range(0, len(fresh), shard_size)]
        indices = _free_indices({s.index for s in shards})
        shards += [Shard(index=next(indices), format=format, records=g) for g in groups]
        return sorted(shards, key=lambda s: s.index), gone
    by_source = {redact_uri(shard.source): shard for shard in listing}
    for name, stats in sorted(committed.items()):
        source = _recorded(name, stats, "source")
        current = by_source.get(source)
        if current is None:
            gone.append(name)
        elif (current.size, current.version) != (stats.size, stats.version):
            raise InputError(
                f"{redact_uri(source)} changed after it was committed as {name} ({stats.size} bytes, version "
                f"{stats.version} then; {current.size} bytes, version {current.version} now); "
                "write to a new output.uri or rerun with --overwrite"
            )
        covered.add(source)
        key = stats.key if stats.key is not None else posixpath.basename(source)  # stats from before keys had the path
        shards.append(
            Shard(
                index=_index(name),
                format=format,
                source=current.source if current else source,
                size=stats.size or 0,
                version=stats.version or "",
                key=key,
            )
        )
    indices = _free_indices({s.index for s in shards})
    fresh = [s for s in listing if redact_uri(s.source) not in covered]
    shards += [dataclasses.replace(s, index=next(indices)) for s in fresh]
    return sorted(shards, key=lambda s: s.index), gone


def _free_indices(taken: set[int]) -> Iterator[int]:
    """Indices no committed shard holds, lowest first: an interrupted run's shards get their names back."""
    return (i for i in itertools.count() if i not in taken)


def _index(name: str) -> int:
    return int(name.rsplit("-", 1)[1])


def _recorded(name: str, stats: ShardStats, field: str) -> Any:
    if getattr(stats, field) is None:
        raise InputError(
            f"{name} was committed without a record of its input (written by an older version); "
            "rerun with --overwrite or write to a new output.uri"
        )
    return getattr(stats, field)


def list_shards(
    uris: str | list[str],
    format: str,
    shard_size: int,
    storage_options: Mapping[str, Any],
    image_extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
) -> list[Shard]:
    """The input as shards, in sorted order; image files are those with ``image_extensions``.

    images: every image file, cut into groups of ``shard_size``. webdataset: one shard per .tar file.
    parquet: one shard per .parquet file.
    """
    try:
        kind = input_format(format)
    except ValueError as e:
        raise InputError(str(e)) from None
    if kind.records_listed:
        ordered = _list_files(uris, storage_options, image_extensions)
        return [
            Shard(index=i, format=format, records=tuple(ordered[start : start + shard_size]))
            for i, start in enumerate(range(0, len(ordered), shard_size))
        ]
    files = _list_files(uris, storage_options, kind.files)
    shards = []
    for i, record in enumerate(files):
        fs, path = filesystem(record.uri, storage_options)
        info = fs.info(path)
        version = info.get("ETag") or info.get("mtime") or info.get("LastModified") or ""
        shards.append(
            Shard(index=i, format=format, source=record.uri, size=int(info.get("size") or 0), version=str(version), key=record.key)
        )
    return shards


KEY_READERS = 8  # Parquet files whose key column is read at once


def index_keys(shards: list[Shard], keys_of: Callable[[Shard], list], field: str, why: str) -> dict[str, Shard]:
    """key -> the shard that holds it, the files read ``KEY_READERS`` at a time. A key two files hold is
    refused (PreflightError naming ``field``, both files and ``why``); repeats inside one file are not
    this index's to judge."""
    index: dict[str, Shard] = {}
    with ThreadPoolExecutor(KEY_READERS) as pool:
        for shard, keys in zip(shards, pool.map(keys_of, shards)):
            for key in keys:
                first = index.setdefault(key, shard)
                if first is not shard:
                    raise PreflightError(
                        f"{field}: key {key!r} is in both {redact_uri(first.source)} and "
                        f"{redact_uri(shard.source)}; {why}"
                    )
    return index


def check_unique_keys(shards: list[Shard], storage_options, key_column: str) -> None:
    """Refuse ``key_column`` values that two Parquet files share, naming both files (a key repeated
    inside one file is that row's reject)."""
    def keys_of(shard: Shard) -> set[str]:
        fs, path = filesystem(shard.source, storage_options)
        with fs.open(path, "rb") as f:
            keys = pq.read_table(f, columns=[key_column]).column(key_column).to_pylist()
        return {str(k) for k in keys if k is not None}

    index_keys(shards, keys_of, "input.key_column", "keys must be unique across the input")


def check_parquet_columns(shard: Shard, input_spec) -> None:
    """Refuse a Parquet input without the columns ``input_spec`` (the spec's input section) names."""
    fs, path = filesystem(shard.source, input_spec.storage_options)
    with fs.open(path, "rb") as f:
        names = pq.ParquetFile(f).schema_arrow.names
    for field_name in ("image_column", "key_column"):
        column = getattr(input_spec, field_name)
        if column is not None and column not in names:
            raise ValueError(
                f"{shard.source} has no column {column!r} (input.{field_name}); its columns: {', '.join(names)}"
            )
