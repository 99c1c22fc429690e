"""The inversion output: one Parquet file of W+ codes per input shard, committed by a stats file.

Layout under ``output.uri``. Readers of a folder (pyarrow, Ray Data, pandas) skip ``_``-prefixed paths,
so the folder reads as the latents alone; readers that take a glob (polars, DuckDB, Hugging Face
``datasets``) read ``<output.uri>/*.parquet``:

    shard-00000.parquet          key, source, w_plus [num_ws][style_dim] (nested fixed-size lists)
    _rejects/shard-00000.parquet key, source, error   (only for shards with rejected records)
    _stats/shard-00000.json      written last: the shard is committed once this exists
    _files/shard-00000.json      every file the shard's writes create, recorded before the first of them
    _job.json                    what produced the output (checked on resume)
    _manifest.json               written when every shard is committed and the job succeeded
    _lock/                       the running job's lease (pipeline.core.lock)
    _engines/                    exported graphs and TensorRT plans (engines.cache), unless engine.cache_uri

``w_plus`` is a fixed-size list of ``num_ws`` fixed-size lists of ``style_dim`` float32 or float16 values,
a type every reader above maps to an [N, num_ws, style_dim] array (Hugging Face ``datasets`` as nested
``List(..., length=...)``, polars as ``Array``, DuckDB as nested ``FLOAT`` lists). float32 values
are BYTE_STREAM_SPLIT-encoded; float16 ones are not, since DuckDB reads that encoding only for 4- and
8-byte values.

Jobs that make images (restoration, translation, editing) add, per shard, before its stats:

    _images/shard-00000/<key>[.<variant>].<png|jpg|webp>   the rows' ``image`` column: each one's full URI
    _previews/shard-00000.png    the shard's first records, inputs beside outputs
    _contact_sheet.png           the first previews stacked, written when the job succeeds

Outputs written before this layout hold ``w_plus`` as ``arrow.fixed_shape_tensor`` and images under
``images/`` (and row URIs as the spec spelled the output). The job still reads, verifies, resumes,
retries and cleans them up; new shards of such an output keep its latent type, so that the folder stays
readable as one dataset (``--overwrite`` writes it anew in this layout).

The job owns only what it wrote: cleaning up after an interrupted run and ``--overwrite`` remove the
files named by ``_files`` records (and by the stats of shards committed before those records existed),
never a file merely because its name looks like the job's. A retry of a shard's rejects removes its
stats first, replaces its files, then writes new stats.
"""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipeline.core.lock import check_fence
from pipeline.core.payloads import ShardStats
from pipeline.core.secrets import redact_text, redact_uri
from pipeline.core.storage import filesystem, is_local, join, with_retries, write_atomically
from pipeline.core.totals import metrics_total, reasons_total, shard_totals

LATENT_COLUMN = "w_plus"
VALUE_TYPES = {"float32": pa.float32(), "float16": pa.float16()}
IMAGES = "_images"  # a shard's images: _images/<shard>/<name>
LEGACY_IMAGES = "images"  # where outputs written before _images hold them
PREVIEW_TILE, PREVIEW_GAP = 128, 4  # pixels of a contact sheet's pictures and the space between them
METADATA_KEY = b"e2style_batch"
REJECT_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("error", pa.string(), nullable=False),
    ]
)


def latent_type(num_ws: int, style_dim: int, dtype: str) -> pa.DataType:
    """The ``w_plus`` column's type: ``num_ws`` fixed-size lists of ``style_dim`` values."""
    row = pa.list_(pa.field("element", VALUE_TYPES[dtype], nullable=False), style_dim)
    return pa.list_(pa.field("element", row, nullable=False), num_ws)


def latent_schema(num_ws: int, style_dim: int, dtype: str, provenance: Mapping[str, Any]) -> pa.Schema:
    return pa.schema(
        [
            pa.field("key", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field(LATENT_COLUMN, latent_type(num_ws, style_dim, dtype), nullable=False),
        ],
        metadata={METADATA_KEY: json.dumps(dict(provenance), sort_keys=True).encode()},
    )


def _is_tensor(kind: pa.DataType) -> bool:
    """``arrow.fixed_shape_tensor``: the latent type of outputs written before the nested lists."""
    return isinstance(kind, pa.FixedShapeTensorType)


def _as_tensor(kind: pa.DataType) -> pa.DataType:
    """The ``arrow.fixed_shape_tensor`` type of the values and shape of a nested-lists ``w_plus`` type."""
    if _is_tensor(kind):
        return kind
    return pa.fixed_shape_tensor(kind.value_type.value_type, (kind.list_size, kind.value_type.list_size))


def _latents(values: pa.Array, kind: pa.DataType) -> pa.Array:
    """Flat row-major values as a ``w_plus`` column of ``kind`` (either layout)."""
    if _is_tensor(kind):
        return pa.ExtensionArray.from_storage(kind, pa.FixedSizeListArray.from_arrays(values, type=kind.storage_type))
    return pa.FixedSizeListArray.from_arrays(pa.FixedSizeListArray.from_arrays(values, type=kind.value_type), type=kind)


def _flat_values(column: pa.ChunkedArray) -> pa.Array:
    """The values of a ``w_plus`` column (either layout), row-major, as one array."""
    if _is_tensor(column.type):
        chunks = [chunk.storage.flatten() for chunk in column.chunks]
        value_type = column.type.value_type
    else:
        chunks = [chunk.flatten().flatten() for chunk in column.chunks]
        value_type = column.type.value_type.value_type
    return pa.concat_arrays(chunks) if chunks else pa.array([], value_type)


def latent_codes(table: pa.Table) -> np.ndarray:
    """The W+ codes of a latents table, [N, num_ws, style_dim] in the stored dtype, from either layout."""
    kind = table.schema.field(LATENT_COLUMN).type
    shape = tuple(kind.shape) if _is_tensor(kind) else (kind.list_size, kind.value_type.list_size)
    return _flat_values(table.column(LATENT_COLUMN)).to_numpy(zero_copy_only=False).reshape(len(table), *shape)


def with_latent_type(table: pa.Table, kind: pa.DataType) -> pa.Table:
    """``table`` with its ``w_plus`` column of type ``kind`` (the same values; metadata kept)."""
    index = table.schema.get_field_index(LATENT_COLUMN)
    if table.schema.field(index).type == kind:
        return table
    column = _latents(_flat_values(table.column(index)), kind)
    return table.set_column(index, pa.field(LATENT_COLUMN, kind, nullable=False), column)


def latent_table(
    keys: list[str], sources: list[str], codes: np.ndarray, provenance: Mapping[str, Any], latent_dtype: str
) -> pa.Table:
    """key, source and W+ codes [N, num_ws, style_dim] as a table whose metadata carries the provenance."""
    if codes.ndim != 3 or len(codes) != len(keys) or len(keys) != len(sources):
        raise ValueError(f"{len(keys)} keys, {len(sources)} sources and codes of shape {list(codes.shape)} disagree")
    schema = latent_schema(codes.shape[1], codes.shape[2], latent_dtype, provenance)
    # Built from the flat values so that a shard whose records were all rejected still gets a (0-row) table.
    flat = pa.array(np.ascontiguousarray(codes, dtype=latent_dtype).reshape(-1), VALUE_TYPES[latent_dtype])
    latents = _latents(flat, schema.field(LATENT_COLUMN).type)
    sources = [redact_uri(source) for source in sources]
    return pa.Table.from_arrays([pa.array(keys, pa.string()), pa.array(sources, pa.string()), latents], schema=schema)


def manifest_table(
    keys: list[str],
    sources: list[str],
    codes: np.ndarray,
    provenance: Mapping[str, Any],
    latent_dtype: str,
    columns: Mapping[str, tuple[list, pa.DataType]],
) -> pa.Table:
    """``latent_table`` with more columns (name -> (values, type)): an application job's rows."""
    table = latent_table(keys, sources, codes, provenance, latent_dtype)
    for name, (values, dtype) in columns.items():
        table = table.append_column(pa.field(name, dtype), pa.array(values, dtype))
    return table


def _latent_encoding(kind: pa.DataType) -> dict[str, str] | None:
    """BYTE_STREAM_SPLIT (smaller after compression) for float32 values only: DuckDB cannot read it on
    float16 ones (2-byte fixed-length values)."""
    depth, values = (1, kind.value_type) if _is_tensor(kind) else (2, kind.value_type.value_type)
    if values != pa.float32():
        return None
    return {LATENT_COLUMN + ".list.element" * depth: "BYTE_STREAM_SPLIT"}


@dataclass
class OutputStore:
    uri: str
    storage_options: Mapping[str, Any]
    fence: tuple[str, str] | None = None  # the run's lease (lock.RunLock.fence), checked before each commit
    # Whether new shards' ``w_plus`` is the tensor type of an output written before the nested lists;
    # None: looked up at each write (``settled`` looks it up once, for a run's writes).
    tensor_latents: bool | None = None

    def __post_init__(self):
        self.fs, self.root = filesystem(self.uri, self.storage_options)

    @property
    def args(self) -> tuple:
        """What rebuilds this store in another process."""
        return self.uri, dict(self.storage_options), self.fence, self.tensor_latents

    def data_path(self, shard: str) -> str:
        return join(self.root, f"{shard}.parquet")

    def rejects_path(self, shard: str) -> str:
        return join(self.root, "_rejects", f"{shard}.parquet")

    def stats_path(self, shard: str) -> str:
        return join(self.root, "_stats", f"{shard}.json")

    @property
    def job_path(self) -> str:
        return join(self.root, "_job.json")

    @property
    def manifest_path(self) -> str:
        return join(self.root, "_manifest.json")

    @property
    def tmp_dir(self) -> str:
        return join(self.root, "_tmp")

    def files_path(self, shard: str) -> str:
        return join(self.root, "_files", f"{shard}.json")

    def images_dir(self, shard: str) -> str:
        return join(self.root, IMAGES, shard)

    @property
    def location(self) -> str:
        """The output's full URI without secrets: an absolute path on disks (whatever folder the job
        ran in), the URL elsewhere."""
        return self.root if is_local(self.fs) else redact_uri(self.uri).rstrip("/")

    def image_uri(self, shard: str, name: str) -> str:
        """The URI a shard's image ``name`` gets (as written in the rows' ``image`` column)."""
        return join(self.location, IMAGES, shard, name)

    def image_path(self, shard: str, uri: str) -> str | None:
        """The path under the root of the image a row of ``shard`` names by ``uri``, in this layout or the
        one before (``images/``, URIs as the spec spelled the output); None if it is in neither folder."""
        for base in dict.fromkeys([self.location, redact_uri(self.uri).rstrip("/")]):
            for folder in (IMAGES, LEGACY_IMAGES):
                prefix = join(base, folder, shard) + "/"
                if uri.startswith(prefix):
                    return f"{folder}/{shard}/{uri[len(prefix):]}"
        return None

    def preview_path(self, shard: str) -> str:
        return join(self.root, "_previews", f"{shard}.png")

    @property
    def contact_sheet_path(self) -> str:
        return join(self.root, "_contact_sheet.png")

    def _write_images(self, shard: str, images: Mapping[str, bytes]) -> None:
        """Write encoded images under _images/<shard>/. They count only once the shard's stats exist, so
        they are written in place: a crash leaves files that its ``_files`` record names for removal."""
        paths = {join(self.images_dir(shard), name): data for name, data in images.items()}
        for parent in sorted({self.fs._parent(p) for p in paths}):
            self.fs.makedirs(parent, exist_ok=True)
        if paths:
            self.fs.pipe(paths)  # object stores upload these concurrently

    def write_contact_sheet(self, stats: list[ShardStats], rows: int) -> str | None:
        """Stack the previews of the shards (in order) until ``rows`` rows; returns the sheet's URI."""
        pieces, taken = [], 0
        for record in stats:
            count = min(record.preview_rows or 0, rows - taken)
            if count <= 0 or not self.fs.exists(self.preview_path(record.shard)):
                continue
            with Image.open(io.BytesIO(self.fs.cat_file(self.preview_path(record.shard)))) as preview:
                row_height = (preview.height - PREVIEW_GAP) // record.preview_rows
                pieces.append(preview.convert("RGB").crop((0, 0, preview.width, PREVIEW_GAP + count * row_height)))
            taken += count
            if taken >= rows:
                break
        if not pieces:
            return None
        sheet = Image.new("RGB", (max(p.width for p in pieces), sum(p.height - PREVIEW_GAP for p in pieces) + PREVIEW_GAP), "white")
        top = 0
        for piece in pieces:
            sheet.paste(piece, (0, top))
            top += piece.height - PREVIEW_GAP
        buffer = io.BytesIO()
        sheet.save(buffer, format="PNG")
        write_atomically(self.fs, self.contact_sheet_path, lambda f: f.write(buffer.getvalue()), self.tmp_dir)
        return join(redact_uri(self.uri), "_contact_sheet.png")

    def _write_json(self, path: str, value: Any) -> None:
        text = json.dumps(value, indent=2, sort_keys=True).encode()
        write_atomically(self.fs, path, lambda f: f.write(text), self.tmp_dir)

    def _read_json(self, path: str) -> Any:
        with self.fs.open(path, "rb") as f:
            return json.loads(f.read())

    def read_job(self) -> dict | None:
        return self._read_json(self.job_path) if self.fs.exists(self.job_path) else None

    def write_job(self, provenance: Mapping[str, Any]) -> None:
        self._write_json(self.job_path, dict(provenance))

    def committed(self) -> dict[str, ShardStats]:
        """Stats of every committed shard, by shard name."""
        folder = join(self.root, "_stats")
        self.fs.invalidate_cache(folder)  # a long-lived process's cached listing predates later commits
        if not self.fs.exists(folder):
            return {}
        stats = {}
        for path in sorted(self.fs.ls(folder, detail=False)):
            if path.endswith(".json"):
                record = ShardStats.from_json(self._read_json(path))
                stats[record.shard] = record
        return stats

    def read_latents(self, shard: str) -> pa.Table:
        """The shard's rows as written (``latent_codes`` reads their W+ codes in either layout)."""
        with self.fs.open(self.data_path(shard), "rb") as f:
            return pq.read_table(f)

    def holds_tensor_latents(self, shard: str | None = None) -> bool:
        """Whether the output's committed shards (other than ``shard``) hold ``w_plus`` as the tensor type
        of the layout before (a listing and one schema read); False when it has none."""
        for name in sorted(self.listed("_stats", ".json") - {shard}):
            try:
                with self.fs.open(self.data_path(name), "rb") as f:
                    return _is_tensor(pq.read_schema(f).field(LATENT_COLUMN).type)
            except FileNotFoundError:  # a damaged shard (verify reports it) says nothing about the others
                continue
        return False

    def settled(self) -> "OutputStore":
        """This store with the latent type of new shards looked up once, for the writes of a run that
        holds the output's lease (no other run commits meanwhile), so that no commit lists the output."""
        return replace(self, tensor_latents=self.holds_tensor_latents())

    def read_rejects(self, shard: str) -> list[tuple[str, str, str]]:
        """(key, source, error) of the shard's rejected records; none when it has no rejects file."""
        if not self.fs.exists(self.rejects_path(shard)):
            return []
        with self.fs.open(self.rejects_path(shard), "rb") as f:
            table = pq.read_table(f)
        return list(zip(*(table.column(name).to_pylist() for name in REJECT_SCHEMA.names)))

    def committed_stats(self, shard: str) -> ShardStats:
        return ShardStats.from_json(self._read_json(self.stats_path(shard)))

    def uncommit(self, shard: str) -> None:
        self.fs.rm(self.stats_path(shard))

    def owned_files(self, shard: str, stats: ShardStats | None = None) -> list[str]:
        """Paths (under the root) of the files the job wrote for ``shard``: its ``_files`` record, or for a
        shard committed before such records existed, what its stats and rows name."""
        if self.fs.exists(self.files_path(shard)):
            return list(self._read_json(self.files_path(shard))["files"])
        if stats is None:
            return []
        files = [stats.data_file] + ([stats.rejects_file] if stats.rejects_file else [])
        if stats.preview_rows:
            files.append(f"_previews/{shard}.png")
        if self.fs.exists(self.data_path(shard)):
            with self.fs.open(self.data_path(shard), "rb") as f:
                rows = pq.ParquetFile(f)
                if "image" in rows.schema_arrow.names:
                    uris = rows.read(columns=["image"]).column("image").to_pylist()
                    files += [path for path in map(lambda uri: self.image_path(shard, uri), uris) if path is not None]
        return files

    def _claim(self, shard: str, files: list[str]) -> None:
        """Record, before writing any of them, the files a write of ``shard`` creates (kept with what an
        earlier write recorded, so that cleanup finds every one)."""
        earlier = self.owned_files(shard)
        merged = list(dict.fromkeys([*earlier, *files]))
        if merged != earlier:
            self._write_json(self.files_path(shard), {"shard": shard, "files": merged})

    def _remove_owned(self, shard: str, stats: Mapping[str, Any] | None) -> None:
        owned = self.owned_files(shard, stats)
        paths = [join(self.root, relative) for relative in owned] + [self.files_path(shard)]
        if is_local(self.fs):
            paths = [p for p in paths if self.fs.exists(p)]
        if paths:
            self.fs.rm(paths)  # object stores delete a list in bulk, and ignore keys that are not there
        folders = {IMAGES} | {path.split("/", 1)[0] for path in owned if path.startswith(f"{LEGACY_IMAGES}/")}
        for folder in sorted(folders):
            self._prune(join(self.root, folder, shard))

    def _remove_partials(self) -> None:
        """Temporary files of ``write_atomically`` that a crash left (their names are the job's)."""
        for path in self.fs.glob(join(self.tmp_dir, "*.partial")):
            self.fs.rm(path)

    def _prune(self, folder: str) -> None:
        """Remove the empty folders under and including ``folder`` (disks only: object stores have none)."""
        if not is_local(self.fs) or not os.path.isdir(folder):
            return
        for current, _, _ in sorted(os.walk(folder), key=lambda entry: -len(entry[0])):
            try:
                os.rmdir(current)
            except OSError:  # not empty: it holds something
                pass

    def remove_uncommitted(self) -> list[str]:
        """Delete what the job wrote for shards it did not commit (an interrupted run); their names.
        Files the job has no record of writing stay, whatever their names."""
        removed = sorted(self.listed("_files", ".json") - set(self.committed()))
        for name in removed:
            self._remove_owned(name, None)
        self._remove_partials()
        return removed

    def unowned(self, shards: list[str], committed: Mapping[str, Any]) -> list[str]:
        """Paths the job would write for ``shards`` that hold files it has no record of writing (a user's
        files): writing there would destroy them. Five listings, whatever the number of shards."""
        recorded = self.listed("_files", ".json")
        kinds = (
            (self.listed("", ".parquet"), self.data_path),
            (self.listed("_rejects", ".parquet"), self.rejects_path),
            (self.listed("_previews", ".png"), self.preview_path),
            (self.listed(IMAGES, ""), self.images_dir),
        )
        taken = []
        for shard in shards:
            if shard in committed or shard in recorded:
                continue
            taken += [path(shard) for present, path in kinds if shard in present]
        return taken

    def listed(self, folder: str, suffix: str) -> set[str]:
        """Names (without ``suffix``) of the ``shard-*`` entries directly in ``folder`` of the output."""
        path = join(self.root, folder) if folder else self.root
        self.fs.invalidate_cache(path)
        if not self.fs.exists(path):
            return set()
        names = (entry.rstrip("/").rsplit("/", 1)[-1] for entry in self.fs.ls(path, detail=False))
        return {n[: len(n) - len(suffix)] for n in names if n.startswith("shard-") and n.endswith(suffix)}

    def clear(self, finish_files: tuple[str, ...] = ()) -> None:
        """Remove every file the job wrote (for a deliberate fresh start); files it did not write stay.
        ``finish_files``: what the job writes under the output once every shard is committed."""
        for shard, stats in self.committed().items():
            self._remove_owned(shard, stats)
            self.fs.rm(self.stats_path(shard))
        self.remove_uncommitted()
        for path in (self.job_path, self.manifest_path, self.contact_sheet_path, *(join(self.root, f) for f in finish_files)):
            if self.fs.exists(path):
                self.fs.rm(path)
        for folder in ("_stats", "_rejects", "_previews", "_files", "_tmp", IMAGES, LEGACY_IMAGES):
            self._prune(join(self.root, folder))

    def write_shard(
        self,
        shard: str,
        table: pa.Table,
        rejects: list[tuple[str, str, str]],
        row_group_size: int,
        started: float,
        inputs: Mapping[str, Any],
        retries: int = 0,
        images: Mapping[str, bytes] | None = None,
        preview: bytes | None = None,
        preview_rows: int | None = None,
        metrics: Sequence[str] = (),
    ) -> ShardStats:
        """Write the shard's images, preview, rows and rejects, then its stats file, which commits it.
        Returns the stats.

        ``inputs`` (``shards.shard_inputs``) records what the shard read, for later runs. A record may have
        several rows (an edit with several strengths); ``written`` counts records, ``rows`` rows.
        ``images`` (name under _images/<shard>/ -> bytes) and ``preview`` (PNG of ``preview_rows`` records)
        are the image jobs'; ``metrics`` names the rows' per-row metric columns, whose values the stats
        keep for the job's totals. The rows are written with the latent type of the output's other shards, so
        that a resumed output written before the nested lists stays one readable dataset.
        """
        images = images or {}
        tensor = self.holds_tensor_latents(shard) if self.tensor_latents is None else self.tensor_latents
        if tensor:
            table = with_latent_type(table, _as_tensor(table.schema.field(LATENT_COLUMN).type))
        files = [f"{shard}.parquet", f"_rejects/{shard}.parquet"] + [f"{IMAGES}/{shard}/{name}" for name in images]
        if preview is not None:
            files.append(f"_previews/{shard}.png")
        self._claim(shard, files)
        self._write_images(shard, images)
        if preview is not None:
            write_atomically(self.fs, self.preview_path(shard), lambda f: f.write(preview), self.tmp_dir)

        def write_rows(f):
            pq.write_table(
                table,
                f,
                row_group_size=row_group_size,
                compression="zstd",
                use_dictionary=["key", "source"],
                column_encoding=_latent_encoding(table.schema.field(LATENT_COLUMN).type),
            )

        write_atomically(self.fs, self.data_path(shard), write_rows, self.tmp_dir)
        rejects_file = None
        if rejects:
            columns = list(zip(*((key, redact_uri(source), redact_text(error)) for key, source, error in rejects)))
            reject_table = pa.Table.from_arrays([pa.array(list(c), pa.string()) for c in columns], schema=REJECT_SCHEMA)
            write_atomically(self.fs, self.rejects_path(shard), lambda f: pq.write_table(reject_table, f), self.tmp_dir)
            rejects_file = f"_rejects/{shard}.parquet"
        elif self.fs.exists(self.rejects_path(shard)):
            self.fs.rm(self.rejects_path(shard))  # left by an earlier, uncommitted attempt
        written = len(set(table.column("key").to_pylist()))
        stats = ShardStats.from_json({
            "shard": shard,
            "records": written + len(rejects),
            "written": written,
            "rejected": len(rejects),
            "rows": table.num_rows,
            "seconds": round(time.time() - started, 3),
            "data_file": f"{shard}.parquet",
            "rejects_file": rejects_file,
            "committed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "retries": retries,
            "preview_rows": preview_rows,
            **shard_totals(rejects, {name: table.column(name).to_pylist() for name in metrics}),
            **inputs,
        })
        if self.fence is not None:
            check_fence(self.fs, self.fence)  # a run whose lease was taken over commits nothing more
        self._write_json(self.stats_path(shard), stats.to_json())
        return stats

    def retry_rejects(
        self,
        shard: str,
        table: pa.Table,
        still_rejected: list[tuple[str, str, str]],
        row_group_size: int,
        started: float,
        images: Mapping[str, bytes] | None = None,
        metrics: Sequence[str] = (),
        preview: bytes | None = None,
        preview_rows: int | None = None,
    ) -> ShardStats:
        """Recommit a shard with the rows (and images) recovered by a retry of its rejects appended.
        ``preview`` (of ``preview_rows`` records) replaces the shard's preview; without it the preview stays.

        The shard is uncommitted (its stats removed) before any of its files is replaced, so a crash part
        way leaves it uncommitted, and the next run redoes it whole; it is never committed with a mix of
        old and new files. Rejects the retry did not reach keep their earlier error.
        """
        previous = self.committed_stats(shard)
        old = self.read_latents(shard)
        retried = set(table.column("key").to_pylist()) | {r[0] for r in still_rejected}
        untouched = [r for r in self.read_rejects(shard) if r[0] not in retried]
        merged = pa.concat_tables([old, with_latent_type(table, old.schema.field(LATENT_COLUMN).type).cast(old.schema)])
        self._claim(shard, self.owned_files(shard, previous))  # a shard committed before _files records
        self.uncommit(shard)
        return with_retries(  # here, not around the whole retry: a second try would find no stats to read
            lambda: self.write_shard(
                shard,
                merged,
                still_rejected + untouched,
                row_group_size,
                started,
                previous.read,
                retries=previous.retries + 1,
                images=images,
                preview=preview,
                preview_rows=previous.preview_rows if preview is None else preview_rows,
                metrics=metrics,
            )
        )

    def write_manifest(self, provenance: Mapping[str, Any], stats: list[ShardStats]) -> None:
        """The output at a glance: its provenance, counts, rejects by reason, the summary of each per-row
        metric (when the job evaluates) and its files."""
        manifest = {
            "provenance": dict(provenance),
            "shards": len(stats),
            "records": sum(s.records for s in stats),
            "written": sum(s.written for s in stats),
            "rejected": sum(s.rejected for s in stats),
            "rejected_by_reason": reasons_total(stats, self.read_rejects),
            "data_files": [s.data_file for s in stats],
            "rejects_files": [s.rejects_file for s in stats if s.rejects_file],
        }
        metrics = metrics_total(stats)
        if metrics:
            manifest["metrics"] = metrics
        self._write_json(self.manifest_path, manifest)
