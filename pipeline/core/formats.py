"""The input formats, registered by name: where a format's records are (files known when listing, or
members of container files read later), how a shard's records are read, what a committed shard records of
what it read, and which checks its listing gets. Everything else asks the format (``input_format``).
"""

from __future__ import annotations

import dataclasses
import posixpath
import tarfile
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import pyarrow.parquet as pq

from pipeline.core.secrets import redact_uri
from pipeline.core.storage import filesystem

if TYPE_CHECKING:
    from pipeline.core.shards import Shard

Blob = bytes | BaseException  # a record's bytes, or why they could not be had


def _image_records(
    shard: Shard, storage_options: Mapping[str, Any], image_column: str, key_column: str | None, image_extensions: tuple[str, ...]
) -> Iterator[tuple[str, str, Blob]]:
    """Image files: each record is a file listed with the shard; the whole shard is fetched at once."""
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
    shard: Shard, storage_options: Mapping[str, Any], image_column: str, key_column: str | None, image_extensions: tuple[str, ...]
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
    shard: Shard, storage_options: Mapping[str, Any], image_column: str, key_column: str | None, image_extensions: tuple[str, ...]
) -> Iterator[tuple[str, str, Blob]]:
    """Parquet: image bytes (or a {bytes, path} struct, as Hugging Face datasets store images) per row;
    the key from ``key_column``, else ``<file's path in the input>:<row>``. A key the file holds twice is
    a reject naming the row that has it first (``pipeline.core.shards.check_unique_keys`` refuses keys repeated across files)."""
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


Reader = Callable[..., Iterator[tuple[str, str, "Blob"]]]  # (shard, storage_options, image_column, key_column, image_extensions)


@dataclass(frozen=True)
class InputFormat:
    name: str
    files: tuple[str, ...]  # extensions of the container files that hold the records; (): each record is a file
    read: Reader  # (key, source, bytes or error) for every record of a shard, in order
    keys_from_column: bool = False  # keys may come from a column, which must be present and unique across files

    @property
    def records_listed(self) -> bool:
        """A shard's records are files known when listing (so a retry fetches only some); else they are
        found when its container file is read."""
        return not self.files

    def only(self, shard: Shard, keys: frozenset[str]) -> Shard:
        """The part of ``shard`` to read to reach ``keys`` (a whole container holds them all)."""
        if not self.records_listed:
            return shard
        return dataclasses.replace(shard, records=tuple(r for r in shard.records if r.key in keys))

    def recorded(self, shard: Shard) -> dict[str, Any]:
        """What a shard read, recorded in its stats so that later runs know which input is already done:
        its files' keys, or its container file with the size and version it had."""
        if self.records_listed:
            return {"inputs": [r.key for r in shard.records]}
        return {"source": redact_uri(shard.source), "key": shard.key, "size": shard.size, "version": shard.version}


FORMATS: dict[str, InputFormat] = {
    f.name: f
    for f in (
        InputFormat("images", (), _image_records),
        InputFormat("webdataset", (".tar",), _tar_records),
        InputFormat("parquet", (".parquet",), _parquet_records, keys_from_column=True),
    )
}


def input_format(name: str) -> InputFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown input format {name!r}; known: {', '.join(FORMATS)}") from None
