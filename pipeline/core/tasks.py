"""The Ray work around the inference actors: preparing a shard before it (a task), committing a shard
after it (in a ``Writer``), each with retries on transient storage errors. What they run is the job's own
step (``Work.prepare``, ``Work.write``).

Kept apart from the scheduler so that workers running these tasks import only what the job's step needs
(the inversion job's steps never import torch or the model code).
"""

from __future__ import annotations

from typing import Any, Callable

from pipeline.core.payloads import Prepared, ShardStats
from pipeline.core.shards import Shard
from pipeline.core.store import OutputStore
from pipeline.core.storage import with_retries


def prepare_task(prepare: Callable, shard: Shard, retry_from: tuple | None) -> tuple[Prepared, Any]:
    """Prepare the shard, or with ``retry_from`` (an output store) only the records it rejected."""
    def step():
        only = frozenset(r[0] for r in OutputStore(*retry_from).read_rejects(shard.name)) if retry_from else None
        return prepare(shard, only)

    return with_retries(step)


def commit_shard(
    write: Callable,
    join: Callable | None,
    store_args: tuple,
    shard: Shard,
    meta: Prepared,
    started: float,
    retry: bool,
    *results: Any,
) -> ShardStats:
    """Commit the shard from its model result, or from the results of its parts joined in order."""
    result = results[0] if len(results) == 1 else join(list(results))
    return with_retries(lambda: write(OutputStore(*store_args), shard, meta, result, started, retry))


class Writer:
    """A long-lived worker that commits shards (``commit_shard``), several at a time on threads, since a
    commit mostly waits on storage. A task per commit would instead take whichever worker process is
    free, and on a node with few CPUs Ray stops idle workers and starts new ones, each importing the
    write step's libraries again: on two cores that costs more CPU than decoding the shard."""

    def write(self, *args: Any) -> ShardStats:
        return commit_shard(*args)
