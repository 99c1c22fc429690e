"""The inversion job's write step on CPU workers: committing a shard's W+ codes (its images are decoded
by ``pipeline.core.decode.DecodeImages``). Workers running it never import torch or the model code."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.payloads import Prepared, Provenance, ShardStats
from pipeline.core.shards import Shard, shard_inputs
from pipeline.core.store import OutputStore, latent_table


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
