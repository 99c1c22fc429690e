"""The inversion job's CPU steps: decoding a shard's images before the model, committing its W+ codes after.
Workers running them never import torch or the model code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from pipeline.core.decode import decode_shard
from pipeline.core.payloads import Prepared, Provenance, ShardStats
from pipeline.core.shards import Shard, shard_inputs
from pipeline.core.store import OutputStore, latent_table


@dataclass(frozen=True)
class DecodeImages:
    """Read and decode a shard's images: (keys, sources, rejects), uint8 RGB [N, size, size, 3]."""

    size: int
    input_spec: Mapping[str, Any]

    def __call__(self, shard: Shard, only: frozenset | None) -> tuple[Prepared, Any]:
        decoded = decode_shard(shard, self.size, self.input_spec, only)
        return Prepared(decoded.keys, decoded.sources, decoded.rejects), decoded.images


@dataclass(frozen=True)
class WriteLatents:
    """Commit a shard of W+ codes: the latents Parquet file, its rejects, then its stats."""

    provenance: Provenance
    latent_dtype: str
    row_group_size: int

    def __call__(self, store: OutputStore, shard: Shard, meta: Prepared, codes, started: float, retry: bool) -> ShardStats:
        table = latent_table(
            meta.keys, meta.sources, codes, self.provenance.to_json(shard=shard.name), self.latent_dtype
        )
        if retry:
            return store.retry_rejects(shard.name, table, meta.rejects, self.row_group_size, started)
        return store.write_shard(
            shard.name, table, meta.rejects, self.row_group_size, started, shard_inputs(shard)
        )
