"""What a job is to the generic runner: a ``JobKind`` (its checks and its ``Work`` on one shard), registered by
name, and the ``Plan`` preflight makes of a spec.

Each job lives in its own package (``pipeline.inversion``, ``pipeline.restore``, ``pipeline.translate``,
``pipeline.edit``) and registers its kind here; listing, resume, commit, rejects, retries, progress and
--verify are the core's (``pipeline.core``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from pipeline.core.decode import read_records
from pipeline.core.errors import PreflightError
from pipeline.core.formats import input_format
from pipeline.core.image_formats import extensions
from pipeline.core.payloads import Prepared, Provenance, ShardStats
from pipeline.core.shards import Shard, check_parquet_columns, check_unique_keys, list_shards
from pipeline.core.spec import JobSpec
from pipeline.core.store import OutputStore


@dataclass(frozen=True)
class Work:
    """A job's work on one shard, in the three places it runs. Each part is pickled on its own, so the
    CPU tasks only import what their own part needs.

    A job that gives ``part`` and ``join`` lets the last shards of a run be spread over several actors:
    each runs the model on one part of the payload and the write step gets the parts' results joined, so
    the shard is still committed as one file."""

    prepare: Callable[[Shard, frozenset | None], tuple[Prepared, Any]]  # CPU task: (meta, payload); ``only``: keys to redo
    model: Callable[[Any, Any, int], Any]  # inference actor: (engine, payload, batch_size) -> result
    write: Callable[[OutputStore, Shard, Prepared, Any, float, bool], ShardStats]  # CPU task: commits the shard
    part: Callable[[Any, int, int, int], Any] | None = None  # (payload, index, parts, batch_size) -> part of it
    join: Callable[[list], Any] | None = None  # the parts' model results, in order -> the shard's result


@dataclass(frozen=True)
class Checked:
    """What a job's checks found: provenance to add to the output (a later run must match every field to
    resume it) and what its work needs from the checks (loaded directions, resolved layers, ...)."""

    provenance: dict[str, Any]
    found: Any = None


class JobKind:
    """What distinguishes one job from another; the runner does the rest (listing, resume, commit,
    rejects, retries, progress). A job names itself, says what it makes of a shard (``work``) and checks
    what it needs (``check``); the other methods serve jobs that read images, as most do."""

    name: str  # the registry's name, recorded in every output's provenance
    verb: str  # what the summary says happened to a record
    spec_class: type[JobSpec]  # the job's spec, as its YAML files are validated
    contact_sheet = False  # assemble _contact_sheet.png from the shards' previews
    finish_files: tuple[str, ...] = ()  # what ``finish`` writes, relative to the output (removed by --overwrite)

    def list_input(self, spec: JobSpec) -> list[Shard]:
        inp = spec.input
        shards = list_shards(inp.uri, inp.format, inp.shard_size, inp.storage_options, extensions(inp.formats))
        if input_format(inp.format).keys_from_column:
            check_parquet_columns(shards[0], inp)
            if inp.key_column:
                check_unique_keys(shards, inp.storage_options, inp.key_column)
        return shards

    def check(self, spec: JobSpec, cfg, info, shards: list[Shard]) -> Checked:
        """Refuse a checkpoint, spec or input this job cannot use (PreflightError). Kinds hold no state:
        what the work needs from the checks travels in the plan (``Checked.found``)."""
        raise NotImplementedError

    def record_keys(self, spec: JobSpec, shard: Shard, stats: ShardStats | None) -> list[str]:
        """The keys of the records the job makes output for in ``shard`` (for --verify): as recorded when
        it was committed (images), or read from its WebDataset or Parquet file."""
        if input_format(shard.format).records_listed:
            return list(stats.inputs or ()) if stats else [r.key for r in shard.records]
        records = read_records(shard, spec.input.storage_options, spec.input.image_column, spec.input.key_column)
        return [key for key, _, _ in records]

    def rows_per_record(self, spec: JobSpec, key: str) -> int:
        """Output rows a record gets (for --verify)."""
        return 1

    def work(self, plan: "Plan") -> Work:
        """The job's steps for the shards of ``plan``."""
        raise NotImplementedError

    def finish(self, plan: "Plan", stats: list[ShardStats]) -> None:
        """Write what the job makes of the whole output (``finish_files``) once every shard is committed,
        after the manifest; a rerun of a complete output writes them again."""


@dataclass
class Plan:
    """Everything checked before any work starts."""

    spec: JobSpec
    shards: list[Shard]
    committed: dict[str, ShardStats]
    provenance: Provenance
    store: OutputStore
    kind: JobKind
    found: Any = None  # what the kind's checks found for its work
    retry_rejects: bool = False
    gone: list[str] = dataclasses.field(default_factory=list)  # committed shards whose input is no longer listed
    overwrite: bool = False  # replace the output (after the engine passed its gate)
    listing: list[Shard] = dataclasses.field(default_factory=list)  # the input as listed, before assignment

    @property
    def todo(self) -> list[Shard]:
        return [s for s in self.shards if s.name not in self.committed]

    @property
    def retries(self) -> list[Shard]:
        """Committed shards whose rejected records are tried again (only with ``retry_rejects``)."""
        if not self.retry_rejects:
            return []
        return [s for s in self.shards if s.name in self.committed and self.committed[s.name].rejected > 0]


# The official ``opts['dataset_type']`` each task's checkpoint was trained with.
TASK_DATASET_TYPES = {
    "colorization": "ffhq_colorization",
    "denoise": "ffhq_denoise",
    "inpainting": "ffhq_inpainting",
    "super_resolution": "celebs_super_resolution",
    "sketch_to_face": "celebs_sketch_to_face",
    "segmentation_to_face": "celebs_seg_to_face",
    "inversion": "ffhq_encode",
}


def check_task(spec, info, task: str) -> None:
    """Refuse a checkpoint whose opts say it was trained for another task."""
    wanted = TASK_DATASET_TYPES[task]
    if info.task is not None and info.task != wanted:
        trained_for = next((name for name, d in TASK_DATASET_TYPES.items() if d == info.task), info.task)
        raise PreflightError(
            f"model.checkpoint: {spec.model.checkpoint} was trained for {trained_for} (its opts['dataset_type'] "
            f"is {info.task!r}); task {task} needs a {wanted!r} checkpoint"
        )


def input_args(spec) -> dict:
    """The input section's decoding settings, as the CPU steps take them (plain values, cheap to pickle),
    with as many decoding threads as the decode task reserves CPUs."""
    args = spec.input.model_dump(
        include={"resize", "convert_to_rgb", "storage_options", "image_column", "key_column", "formats", "fast_jpeg"}
    )
    return {**args, "decode_threads": max(1, round(spec.resources.decode_cpus))}


JOBS: dict[str, JobKind] = {}


def register(kind: JobKind) -> JobKind:
    """Make ``kind`` known by its name (each job's package registers its own)."""
    if kind.name in JOBS:
        raise ValueError(f"a job named {kind.name!r} is already registered")
    JOBS[kind.name] = kind
    return kind


def job_kind(name: str) -> JobKind:
    try:
        return JOBS[name]
    except KeyError:
        raise ValueError(f"unknown job {name!r}; known: {', '.join(sorted(JOBS))}") from None
