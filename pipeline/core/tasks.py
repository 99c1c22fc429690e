"""The Ray tasks around the inference actors: preparing a shard before it, committing a shard after it,
and inversion's own parts of both.

Kept apart from the runner so that the workers running inversion's tasks never import torch or the
model code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from pipeline.decode import read_and_decode
from pipeline.image_formats import DEFAULT_FORMATS
from pipeline.shards import Shard, shard_inputs
from pipeline.sink import OutputStore, latent_table
from pipeline.storage import with_retries


def prepare_task(prepare: Callable, shard: Shard, retry_from: tuple | None) -> tuple[dict, Any]:
    """Prepare the shard, or with ``retry_from`` (an output store) only the records it rejected."""
    def step():
        only = frozenset(r[0] for r in OutputStore(*retry_from).read_rejects(shard.name)) if retry_from else None
        return prepare(shard, only)

    return with_retries(step)


def write_task(
    write: Callable, store_args: tuple, shard: Shard, meta: dict, result: Any, started: float, retry: bool
) -> dict:
    return with_retries(lambda: write(OutputStore(*store_args), shard, meta, result, started, retry))


@dataclass(frozen=True)
class DecodeImages:
    """Read and decode a shard's images: (keys, sources, rejects), uint8 RGB [N, size, size, 3]."""

    size: int
    input_spec: Mapping[str, Any]

    def __call__(self, shard: Shard, only: frozenset | None) -> tuple[dict, Any]:
        spec = self.input_spec
        decoded = read_and_decode(
            shard,
            self.size,
            spec["resize"],
            spec["convert_to_rgb"],
            spec["storage_options"],
            spec["image_column"],
            spec["key_column"],
            only,
            tuple(spec.get("formats", DEFAULT_FORMATS)),
        )
        return {"keys": decoded.keys, "sources": decoded.sources, "rejects": decoded.rejects}, decoded.images


@dataclass(frozen=True)
class WriteLatents:
    """Commit a shard of W+ codes: the latents Parquet file, its rejects, then its stats."""

    provenance: Mapping[str, Any]
    latent_dtype: str
    row_group_size: int

    def __call__(self, store: OutputStore, shard: Shard, meta: dict, codes, started: float, retry: bool) -> dict:
        table = latent_table(
            meta["keys"], meta["sources"], codes, dict(self.provenance, shard=shard.name), self.latent_dtype
        )
        if retry:
            return store.retry_rejects(shard.name, table, meta["rejects"], self.row_group_size, started)
        return store.write_shard(
            shard.name, table, meta["rejects"], self.row_group_size, started, shard_inputs(shard)
        )
