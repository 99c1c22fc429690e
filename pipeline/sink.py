"""The inversion output: one Parquet file of W+ codes per input shard, committed by a stats file.

Layout under ``output.uri`` (readers such as pyarrow and Ray Data skip ``_``-prefixed paths, so reading
the folder as a dataset yields the latents only):

    shard-00000.parquet          key, source, w_plus (fixed_shape_tensor [num_ws, style_dim])
    _rejects/shard-00000.parquet key, source, error   (only for shards with rejected records)
    _stats/shard-00000.json      written last: the shard is committed once this exists
    _job.json                    what produced the output (checked on resume)
    _manifest.json               written when every shard is committed and the job succeeded
    _engines/                    exported graphs and TensorRT plans (engines.cache), unless engine.cache_uri

A retry of a shard's rejects removes its stats first, replaces its files, then writes new stats.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.storage import filesystem, join, write_atomically

LATENT_COLUMN = "w_plus"
METADATA_KEY = b"e2style_batch"
REJECT_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("error", pa.string(), nullable=False),
    ]
)


def latent_schema(num_ws: int, style_dim: int, dtype: str, provenance: Mapping[str, Any]) -> pa.Schema:
    value_type = {"float32": pa.float32(), "float16": pa.float16()}[dtype]
    return pa.schema(
        [
            pa.field("key", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field(LATENT_COLUMN, pa.fixed_shape_tensor(value_type, (num_ws, style_dim)), nullable=False),
        ],
        metadata={METADATA_KEY: json.dumps(dict(provenance), sort_keys=True).encode()},
    )


def latent_table(
    keys: list[str], sources: list[str], codes: np.ndarray, provenance: Mapping[str, Any], latent_dtype: str
) -> pa.Table:
    """key, source and W+ codes [N, num_ws, style_dim] as a table whose metadata carries the provenance."""
    if codes.ndim != 3 or len(codes) != len(keys) or len(keys) != len(sources):
        raise ValueError(f"{len(keys)} keys, {len(sources)} sources and codes of shape {list(codes.shape)} disagree")
    schema = latent_schema(codes.shape[1], codes.shape[2], latent_dtype, provenance)
    tensor_type = schema.field(LATENT_COLUMN).type
    flat = pa.array(np.ascontiguousarray(codes, dtype=latent_dtype).reshape(-1), tensor_type.value_type)
    # Built from its storage so that a shard whose records were all rejected still gets a (0-row) table.
    latents = pa.ExtensionArray.from_storage(
        tensor_type, pa.FixedSizeListArray.from_arrays(flat, codes.shape[1] * codes.shape[2])
    )
    return pa.Table.from_arrays([pa.array(keys, pa.string()), pa.array(sources, pa.string()), latents], schema=schema)


@dataclass
class OutputStore:
    uri: str
    storage_options: Mapping[str, Any]

    def __post_init__(self):
        self.fs, self.root = filesystem(self.uri, self.storage_options)

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

    def committed(self) -> dict[str, dict]:
        """Stats of every committed shard, by shard name."""
        folder = join(self.root, "_stats")
        if not self.fs.exists(folder):
            return {}
        stats = {}
        for path in sorted(self.fs.ls(folder, detail=False)):
            if path.endswith(".json"):
                record = self._read_json(path)
                stats[record["shard"]] = record
        return stats

    def read_latents(self, shard: str) -> pa.Table:
        with self.fs.open(self.data_path(shard), "rb") as f:
            return pq.read_table(f)

    def read_rejects(self, shard: str) -> list[tuple[str, str, str]]:
        """(key, source, error) of the shard's rejected records; none when it has no rejects file."""
        if not self.fs.exists(self.rejects_path(shard)):
            return []
        with self.fs.open(self.rejects_path(shard), "rb") as f:
            table = pq.read_table(f)
        return list(zip(*(table.column(name).to_pylist() for name in REJECT_SCHEMA.names)))

    def committed_stats(self, shard: str) -> dict:
        return self._read_json(self.stats_path(shard))

    def uncommit(self, shard: str) -> None:
        self.fs.rm(self.stats_path(shard))

    def remove_uncommitted(self) -> list[str]:
        """Delete data and rejects files of shards without stats (left by an interrupted run); their names."""
        committed = set(self.committed())
        removed = []
        for pattern in (join(self.root, "shard-*.parquet"), join(self.root, "_rejects", "shard-*.parquet")):
            for path in self.fs.glob(pattern):
                name = path.rsplit("/", 1)[-1].removesuffix(".parquet")
                if name not in committed:
                    self.fs.rm(path)
                    removed.append(name)
        return sorted(set(removed))

    def clear(self) -> None:
        """Remove every file this job layout owns (for a deliberate fresh start); other files stay."""
        owned = [self.job_path, self.manifest_path]
        if self.fs.exists(self.root):
            owned += [p for p in self.fs.ls(self.root, detail=False) if p.rsplit("/", 1)[-1].startswith("shard-")]
        for path in owned:
            if self.fs.exists(path):
                self.fs.rm(path)
        for folder in ("_stats", "_rejects", "_tmp"):
            if self.fs.exists(join(self.root, folder)):
                self.fs.rm(join(self.root, folder), recursive=True)

    def write_shard(
        self,
        shard: str,
        table: pa.Table,
        rejects: list[tuple[str, str, str]],
        row_group_size: int,
        started: float,
        inputs: Mapping[str, Any],
        retries: int = 0,
    ) -> dict:
        """Write the shard's rows and rejects, then its stats file, which commits it. Returns the stats.

        ``inputs`` (``shards.shard_inputs``) records what the shard read, for later runs.
        """
        def write_rows(f):
            encodings = {f"{LATENT_COLUMN}.list.element": "BYTE_STREAM_SPLIT"} if LATENT_COLUMN in table.column_names else None
            pq.write_table(
                table,
                f,
                row_group_size=row_group_size,
                compression="zstd",
                use_dictionary=["key", "source"],
                column_encoding=encodings,
            )

        write_atomically(self.fs, self.data_path(shard), write_rows, self.tmp_dir)
        rejects_file = None
        if rejects:
            columns = list(zip(*rejects))
            reject_table = pa.Table.from_arrays([pa.array(list(c), pa.string()) for c in columns], schema=REJECT_SCHEMA)
            write_atomically(self.fs, self.rejects_path(shard), lambda f: pq.write_table(reject_table, f), self.tmp_dir)
            rejects_file = f"_rejects/{shard}.parquet"
        elif self.fs.exists(self.rejects_path(shard)):
            self.fs.rm(self.rejects_path(shard))  # left by an earlier, uncommitted attempt
        stats = {
            "shard": shard,
            "records": table.num_rows + len(rejects),
            "written": table.num_rows,
            "rejected": len(rejects),
            "seconds": round(time.time() - started, 3),
            "data_file": f"{shard}.parquet",
            "rejects_file": rejects_file,
            "committed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **inputs,
        }
        if retries:
            stats["retries"] = retries
        self._write_json(self.stats_path(shard), stats)
        return stats

    def retry_rejects(
        self,
        shard: str,
        table: pa.Table,
        still_rejected: list[tuple[str, str, str]],
        row_group_size: int,
        started: float,
    ) -> dict:
        """Recommit a shard with the rows recovered by a retry of its rejects appended to its rows.

        The shard is uncommitted (its stats removed) before its files are replaced, so a crash part way
        leaves it uncommitted, and the next run redoes it whole; it is never committed with a mix of old
        and new files. Rejects the retry did not reach keep their earlier error.
        """
        previous = self.committed_stats(shard)
        old = self.read_latents(shard)
        retried = set(table.column("key").to_pylist()) | {r[0] for r in still_rejected}
        untouched = [r for r in self.read_rejects(shard) if r[0] not in retried]
        merged = pa.concat_tables([old, table.cast(old.schema)])
        self.uncommit(shard)
        return self.write_shard(
            shard,
            merged,
            still_rejected + untouched,
            row_group_size,
            started,
            {k: previous[k] for k in ("inputs", "source", "size", "version") if k in previous},
            retries=previous.get("retries", 0) + 1,
        )

    def write_manifest(self, provenance: Mapping[str, Any], stats: list[dict]) -> None:
        self._write_json(
            self.manifest_path,
            {
                "provenance": dict(provenance),
                "shards": len(stats),
                "records": sum(s["records"] for s in stats),
                "written": sum(s["written"] for s in stats),
                "rejected": sum(s["rejected"] for s in stats),
                "data_files": [s["data_file"] for s in stats],
                "rejects_files": [s["rejects_file"] for s in stats if s["rejects_file"]],
            },
        )
