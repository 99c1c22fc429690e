"""The Ray tasks around the inference actors: decoding a shard before it, committing a shard after it.

Kept apart from the runner so that the workers running them never import torch or the model code.
"""

from __future__ import annotations

from typing import Any

from pipeline.decode import read_and_decode
from pipeline.shards import Shard, shard_inputs
from pipeline.sink import OutputStore, latent_table


def decode_shard(shard: Shard, size: int, input_spec: dict, retry_from: tuple | None) -> tuple[dict, Any]:
    """Decode the shard, or with ``retry_from`` (an output store) only the records it rejected."""
    only = frozenset(r[0] for r in OutputStore(*retry_from).read_rejects(shard.name)) if retry_from else None
    decoded = read_and_decode(
        shard,
        size,
        input_spec["resize"],
        input_spec["convert_to_rgb"],
        input_spec["storage_options"],
        input_spec["image_column"],
        input_spec["key_column"],
        only,
    )
    return {"keys": decoded.keys, "sources": decoded.sources, "rejects": decoded.rejects}, decoded.images


def write_shard(
    store_args: tuple, shard: Shard, meta: dict, codes, provenance: dict, spec_output: dict, started: float, retry: bool
) -> dict:
    store = OutputStore(*store_args)
    table = latent_table(
        meta["keys"], meta["sources"], codes, dict(provenance, shard=shard.name), spec_output["latent_dtype"]
    )
    if retry:
        return store.retry_rejects(shard.name, table, meta["rejects"], spec_output["row_group_size"], started)
    return store.write_shard(
        shard.name, table, meta["rejects"], spec_output["row_group_size"], started,
        shard_inputs(shard),
    )
