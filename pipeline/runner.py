"""Running a job spec on Ray: prepare tasks feed inference actors, write tasks commit each shard.

    driver: list shards, skip committed ones, keep ``shards_in_flight`` shards preparing ahead
    prepare task (CPU)   shard -> (keys, sources, rejects), model input       [object store]
    inference actor      model input -> W+ codes (and images)                 [object store]
    write task (CPU)     results + keys -> Parquet (and images), rejects, then stats (commit)

What each step does is the job's ``JobKind.work`` (inversion here; restoration, translation and editing
in ``pipeline.applications``); listing, resume, commit, rejects and retries are shared.
Preparing runs ahead of the model and writing runs behind it, so neither waits on the other; each
actor has a second shard queued behind the one it is working on. An actor
that dies is restarted by Ray and its call retried (``max_restarts``, ``max_task_retries``); a decode or
write task whose worker dies is retried by Ray, one that meets a transient storage error retries itself
with backoff (``pipeline.tasks``); a shard is written whole or not at all.

A run holds the output's lease (``pipeline.lock``) from after preflight to its end, so two runs never
write one output; it removes only files the job recorded writing (``pipeline.sink``), and nothing at all
before its engine is built and has passed the accuracy gate.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import pyarrow.parquet as pq
import ray

from engines import CheckpointError, checkpoint_sha256, load_e2style
from engines.engine import EngineOptions
from engines.gate import GateThresholds
from pipeline.decode import read_records
from pipeline.actors import InferenceActor, InverterFactory, invert_images, prepare_engine
from pipeline.cluster import start_ray
from pipeline.shards import InputError, Shard, assign_shards, list_shards
from pipeline.tasks import DecodeImages, WriteLatents, prepare_task, write_task
from pipeline.image_formats import extensions
from pipeline.lock import LockHeld, RunLock
from pipeline.secrets import redact_text, redact_uri
from pipeline.sink import OutputStore
from pipeline.spec import InversionSpec, JobSpec
from pipeline.storage import filesystem, location, overlap

PACKAGE_VERSION = "0.1.0"
RETRIES = 3
# A second call waits in the actor's queue, so the model starts the next shard as soon as it finishes
# one, without a round trip through a driver that may be short of CPU.
CALLS_PER_ACTOR = 2
KEY_READERS = 8  # Parquet files whose key column is read at once


class PreflightError(ValueError):
    """The spec cannot run: a missing checkpoint, unreachable storage, a conflicting output. Nothing was written."""


class JobFailed(RuntimeError):
    """The job ran but did not succeed (too many rejects, a shard that failed after retries)."""


@dataclass(frozen=True)
class Work:
    """A job's work on one shard, in the three places it runs. Each part is pickled on its own, so the
    CPU tasks only import what their own part needs."""

    prepare: Callable[[Shard, frozenset | None], tuple[dict, Any]]  # CPU task: (meta, payload); ``only``: keys to redo
    model: Callable[[Any, Any, int], Any]  # inference actor: (engine, payload, batch_size) -> result
    write: Callable[[OutputStore, Shard, dict, Any, float, bool], dict]  # CPU task: commits the shard, returns its stats


class JobKind:
    """What distinguishes one job from another; the runner does the rest (listing, resume, commit,
    rejects, retries, progress). Subclasses override what differs from inversion."""

    name = "inversion"
    verb = "inverted"  # what the summary says happened to a record
    contact_sheet = False  # assemble _contact_sheet.png from the shards' previews

    def list_input(self, spec: JobSpec) -> list[Shard]:
        inp = spec.input
        shards = list_shards(inp.uri, inp.format, inp.shard_size, inp.storage_options, extensions(inp.formats))
        if inp.format == "parquet":
            _check_parquet_columns(shards[0], spec)
            if inp.key_column:
                check_unique_keys(shards, inp.storage_options, inp.key_column)
        return shards

    def check(self, spec: JobSpec, cfg, info, shards: list[Shard]) -> dict[str, Any]:
        """Refuse a checkpoint, spec or input this job cannot use (PreflightError); returns provenance to
        add, every field of which a later run must match to resume the output."""
        if cfg.input_channels != 3:
            raise PreflightError(
                f"model.checkpoint: {spec.model.checkpoint} takes {cfg.input_channels}-channel input "
                f"(task {info.task}); the inversion job reads RGB images"
            )
        return {}

    def record_keys(self, spec: JobSpec, shard: Shard, stats: dict | None) -> list[str]:
        """The keys of the records the job makes output for in ``shard`` (for --verify): as recorded when
        it was committed (images), or read from its WebDataset or Parquet file."""
        if shard.format == "images":
            return list(stats["inputs"]) if stats else [r.key for r in shard.records]
        records = read_records(shard, spec.input.storage_options, spec.input.image_column, spec.input.key_column)
        return [key for key, _, _ in records]

    def rows_per_record(self, spec: JobSpec, key: str) -> int:
        """Output rows a record gets (for --verify)."""
        return 1

    def work(self, plan: "Plan") -> Work:
        spec = plan.spec
        input_args = spec.input.model_dump(
            include={"resize", "convert_to_rgb", "storage_options", "image_column", "key_column", "formats"}
        )
        return Work(
            prepare=DecodeImages(plan.provenance["image_size"], input_args),
            model=invert_images,
            write=WriteLatents(plan.provenance, spec.output.latent_dtype, spec.output.row_group_size),
        )


INVERSION = JobKind()


@dataclass
class Plan:
    """Everything checked before any work starts."""

    spec: JobSpec
    shards: list[Shard]
    committed: dict[str, dict]
    provenance: dict[str, Any]
    store: OutputStore
    retry_rejects: bool = False
    gone: list[str] = dataclasses.field(default_factory=list)  # committed shards whose input is no longer listed
    kind: JobKind = INVERSION
    overwrite: bool = False  # replace the output (after the engine passed its gate)
    listing: list[Shard] = dataclasses.field(default_factory=list)  # the input as listed, before assignment
    matched: tuple[str, ...] = ()  # provenance fields a resumed output must match

    @property
    def todo(self) -> list[Shard]:
        return [s for s in self.shards if s.name not in self.committed]

    @property
    def retries(self) -> list[Shard]:
        """Committed shards whose rejected records are tried again (only with ``retry_rejects``)."""
        if not self.retry_rejects:
            return []
        return [s for s in self.shards if self.committed.get(s.name, {}).get("rejected", 0) > 0]


@dataclass
class JobReport:
    output: str
    shards: int
    shards_skipped: int
    records: int
    written: int
    rejected: int
    seconds: float
    failure_rate: float
    succeeded: bool
    message: str = ""
    retried: int = 0
    recovered: int = 0
    gone: int = 0  # committed shards whose input is no longer listed (kept as they are)
    verb: str = "inverted"
    contact_sheet: str | None = None
    cluster: str = ""  # the Ray it ran on

    def summary(self) -> str:
        rate = self.records / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"{'succeeded' if self.succeeded else 'FAILED'}: {self.written} of {self.records} records {self.verb}, "
            f"{self.rejected} rejected ({self.failure_rate:.2%}), {self.shards} shards "
            f"({self.shards_skipped} already committed)",
            f"time {self.seconds:.1f} s, {rate:.1f} records/s this run",
            f"output: {self.output}",
        ]
        if self.retried:
            lines.insert(1, f"retried {self.retried} rejected records: {self.recovered} recovered, "
                            f"{self.retried - self.recovered} still rejected")
        if self.contact_sheet:
            lines.append(f"contact sheet: {self.contact_sheet}")
        if self.gone:
            lines.append(f"{self.gone} committed shard(s) read input that is no longer listed; their output is kept")
        if self.cluster:
            lines.append(f"ray: {self.cluster}")
        if self.message:
            lines.append(self.message)
        return "\n".join(lines)


def plan_job(
    spec: JobSpec, overwrite: bool = False, retry_rejects: bool = False, kind: JobKind = INVERSION
) -> Plan:
    """List the input, inspect the checkpoint and the output. Raises PreflightError; writes nothing.

    With ``retry_rejects`` the rejected records of committed shards are read and processed again.
    """
    check_disjoint(spec)
    try:
        listing = kind.list_input(spec)
    except PreflightError:
        raise
    except Exception as e:  # unreachable endpoints and missing credentials raise outside OSError too
        raise PreflightError(f"input.uri: {_reason(e)}") from e
    try:
        model, info = load_e2style(spec.model.checkpoint, spec.model.stages, storage_options=spec.model.storage_options)
        sha = checkpoint_sha256(spec.model.checkpoint, spec.model.storage_options)
    except CheckpointError as e:
        raise PreflightError(f"model.checkpoint: {e}") from e
    except Exception as e:
        raise PreflightError(f"model.checkpoint: cannot read {redact_uri(spec.model.checkpoint)}: {_reason(e)}") from e
    cfg = model.config
    del model
    extra = kind.check(spec, cfg, info, listing)
    provenance = {
        "job": kind.name,
        "checkpoint": redact_uri(spec.model.checkpoint),
        "checkpoint_sha256": sha,
        "stages": cfg.stages,
        "task": info.task,
        "image_size": cfg.image_size,
        "num_ws": cfg.num_ws,
        "style_dim": cfg.style_dim,
        "engine": engine_options(spec).name,
        "precision": spec.engine.precision,
        "latent_dtype": spec.output.latent_dtype,
        "package_version": PACKAGE_VERSION,
        "spec_sha256": spec.output_fingerprint(),
        **extra,
    }
    try:
        store = OutputStore(spec.output.uri, spec.output.storage_options)
        _check_reachable(store)
    except Exception as e:
        raise PreflightError(f"output.uri: cannot use {redact_uri(spec.output.uri)}: {_reason(e)}") from e
    plan = Plan(
        spec, [], {}, provenance, store, retry_rejects, kind=kind, overwrite=overwrite, listing=listing,
        matched=("job", "checkpoint_sha256", "stages", "spec_sha256", "latent_dtype", *extra),
    )
    return inspect_output(plan)


def inspect_output(plan: Plan) -> Plan:
    """The plan with the output as it is now: its committed shards, and the shards of this run. Refuses
    output of another job or spec, and paths the run would write that hold files it did not write."""
    spec, store, provenance = plan.spec, plan.store, plan.provenance
    try:
        previous = None if plan.overwrite else store.read_job()
        committed = store.committed()
    except Exception as e:
        raise PreflightError(f"output.uri: cannot use {redact_uri(spec.output.uri)}: {_reason(e)}") from e
    if previous is not None:
        for field_name in plan.matched:
            if field_name == "job" and "job" not in previous:  # written before jobs other than inversion
                continue
            if previous.get(field_name) != provenance[field_name]:
                raise PreflightError(
                    f"output.uri: {redact_uri(spec.output.uri)} holds output of a different {field_name.replace('_', ' ')} "
                    f"({previous.get(field_name)!r}, this spec: {provenance[field_name]!r}); "
                    "rerun with --overwrite to replace it, or choose another output.uri"
                )
    listing = plan.listing
    try:
        shards, gone = assign_shards(
            listing, listing[0].format, getattr(spec.input, "shard_size", 1), {} if plan.overwrite else committed
        )
    except InputError as e:
        raise PreflightError(f"input.uri: {e}") from e
    foreign = store.unowned([s.name for s in shards], committed)
    if foreign:
        raise PreflightError(
            f"output.uri: {len(foreign)} path(s) this run would write hold files it did not write, e.g. "
            f"{store.fs.unstrip_protocol(foreign[0])}; move them away or choose another output.uri"
        )
    return dataclasses.replace(plan, shards=shards, committed={} if plan.overwrite else committed, gone=gone)


def check_disjoint(spec: JobSpec) -> None:
    """Refuse an output that is, holds or lies inside an input: the job would read what it writes, and
    removing its own files could remove the input."""
    out = spec.output.uri
    uris = [] if spec.input.uri is None else [spec.input.uri] if isinstance(spec.input.uri, str) else spec.input.uri
    inputs = [("input.uri" if len(uris) == 1 else f"input.uri[{i}]", u, spec.input.storage_options) for i, u in enumerate(uris)]
    if getattr(spec.input, "latents", None):
        inputs.append(("input.latents", spec.input.latents, spec.input.latents_storage_options))
    try:
        where = location(out, spec.output.storage_options)
    except Exception:  # an unusable output URI is reported when the output is opened
        return
    for field_name, uri, options in inputs:
        try:
            theirs = location(uri, options)
        except Exception:  # reported when the input is listed
            continue
        if overlap(where, theirs):
            raise PreflightError(
                f"output.uri {redact_uri(out)} and {field_name} {redact_uri(uri)} overlap (the same folder, or one "
                "inside the other); the output must be outside the input and the input outside the output"
            )


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


def _reason(e: BaseException) -> str:
    return redact_text(f"{type(e).__name__}: {e}" if not isinstance(e, (OSError, ValueError)) or not str(e) else str(e))


def _check_parquet_columns(shard: Shard, spec: JobSpec) -> None:
    fs, path = filesystem(shard.source, spec.input.storage_options)
    with fs.open(path, "rb") as f:
        names = pq.ParquetFile(f).schema_arrow.names
    for field_name in ("image_column", "key_column"):
        column = getattr(spec.input, field_name)
        if column is not None and column not in names:
            raise ValueError(
                f"{shard.source} has no column {column!r} (input.{field_name}); its columns: {', '.join(names)}"
            )


def _check_reachable(store: OutputStore) -> None:
    protocol = store.fs.protocol if isinstance(store.fs.protocol, str) else store.fs.protocol[0]
    if protocol in ("file", "local", "memory"):
        return
    bucket = store.root.split("/", 1)[0]
    if not store.fs.exists(bucket):
        raise OSError(f"bucket {bucket!r} does not exist or is not reachable")


def _check_cluster_fits(res) -> None:
    """Actors keep their CPUs and GPUs for the whole job; the decode tasks need CPU beside them."""
    available = ray.cluster_resources()
    cpus_needed = res.num_actors * res.num_cpus_per_actor + res.decode_cpus
    gpus_needed = res.num_actors * res.num_gpus_per_actor
    if cpus_needed > available.get("CPU", 0) or gpus_needed > available.get("GPU", 0):
        raise PreflightError(
            f"resources: {res.num_actors} actor(s) x {res.num_cpus_per_actor} CPU and {res.num_gpus_per_actor} GPU, "
            f"plus {res.decode_cpus} CPU for a decode task, need {cpus_needed:g} CPU and {gpus_needed:g} GPU; "
            f"the Ray cluster has {available.get('CPU', 0):g} CPU and {available.get('GPU', 0):g} GPU. "
            "Lower resources.num_actors, num_cpus_per_actor or decode_cpus"
        )


def engine_options(spec: JobSpec) -> EngineOptions:
    e, res = spec.engine, spec.resources
    max_batch = e.max_batch or res.batch_size
    return EngineOptions(
        backend=e.backend,
        precision=e.precision,
        fallback=tuple(e.fallback),
        compile=e.compile,
        cuda_graphs=e.cuda_graphs,
        modulation=e.modulation,
        min_batch=min(e.min_batch, max_batch),
        opt_batch=min(res.batch_size, max_batch),
        max_batch=max_batch,
        # On GPUs the torch engine times a few batches once and keeps the fastest, unless the spec fixes one.
        pick_batch=e.max_batch is None and res.num_gpus_per_actor > 0 and e.backend == "torch",
        threads=math.ceil(res.num_cpus_per_actor),
        cache_uri=e.cache_uri or spec.output.uri.rstrip("/") + "/_engines",
        cache_storage_options=dict(e.cache_storage_options if e.cache_uri else spec.output.storage_options),
        gate=GateThresholds(e.gate.max_wplus_error, e.gate.min_psnr_db),
        gate_batch=e.gate.batch,
    )


def _prepare(factory: InverterFactory, res, provenance: dict) -> InverterFactory:
    """Build and gate the engine once, on a worker shaped like the actors, before any actor starts."""
    options = factory.engine
    if options.is_reference and not options.pick_batch:
        return factory
    task = ray.remote(prepare_engine).options(num_cpus=res.num_cpus_per_actor, num_gpus=res.num_gpus_per_actor)
    result = ray.get(task.remote(factory))
    if "error" in result:
        raise PreflightError(f"engine: {result['error']}")
    options = result["options"]
    provenance.update(engine=options.name, precision=options.precision, accuracy_gate=result["report"])
    return dataclasses.replace(factory, engine=options)


def run_plan(plan: Plan, progress: Callable[[dict], None] | None = None, lock: RunLock | None = None) -> JobReport:
    """Run a plan whose output lease is held (``lock``; tests may run a plan without one)."""
    spec, res = plan.spec, plan.spec.resources
    started = time.time()
    todo = [(shard, False) for shard in plan.todo] + [(shard, True) for shard in plan.retries]
    if plan.committed == {} and not todo:
        raise JobFailed("nothing to do: the input has no shards")
    retried = sum(plan.committed[s.name]["rejected"] for s, retry in todo if retry)
    if todo:
        _check_cluster_fits(res)
        use_gpu = res.num_gpus_per_actor > 0
        options = engine_options(spec)
        factory = InverterFactory(
            checkpoint=spec.model.checkpoint,
            stages=plan.provenance["stages"],
            device="cuda" if use_gpu else "cpu",
            threads=math.ceil(res.num_cpus_per_actor),
            storage_options=dict(spec.model.storage_options),
            engine=options,
        )
        factory = _prepare(factory, res, plan.provenance)
        # A batch the engine picked on its GPU is also what each model call gets.
        call_batch = factory.engine.max_batch if options.pick_batch else res.batch_size
    if plan.overwrite:  # only now: a spec whose engine cannot be built or gated keeps the old output
        plan.store.clear()
    plan.store.write_job(plan.provenance)
    plan.store.remove_uncommitted()  # what an interrupted run wrote for shards it did not commit
    stats = dict(plan.committed)
    if todo:
        for shard_stats in _run_shards(plan, todo, factory, call_batch, lock):
            stats[shard_stats["shard"]] = shard_stats
            if progress:
                progress(shard_stats)

    records = sum(s["records"] for s in stats.values())
    rejected = sum(s["rejected"] for s in stats.values())
    recovered = sum(stats[s.name]["written"] - plan.committed[s.name]["written"] for s, retry in todo if retry)
    rate = rejected / records if records else 0.0
    ok = rate <= spec.max_failure_rate
    message = "" if ok else (
        f"too many rejected records: {rate:.2%} > max_failure_rate {spec.max_failure_rate:.2%}; "
        f"see {redact_uri(spec.output.uri).rstrip('/')}/_rejects/"
    )
    sheet = None
    if ok and len(stats) == len(plan.shards):
        ordered = [stats[s.name] for s in plan.shards]
        if plan.kind.contact_sheet and spec.output.contact_sheet_rows:
            sheet = plan.store.write_contact_sheet(ordered, spec.output.contact_sheet_rows)
        plan.store.write_manifest(plan.provenance, ordered)
    return JobReport(
        output=redact_uri(spec.output.uri),
        shards=len(plan.shards),
        shards_skipped=len(plan.committed),
        records=records,
        written=records - rejected,
        rejected=rejected,
        seconds=time.time() - started,
        failure_rate=rate,
        succeeded=ok,
        message=message,
        retried=retried,
        recovered=recovered,
        gone=len(plan.gone),
        verb=plan.kind.verb,
        contact_sheet=sheet,
    )


def _run_shards(
    plan: Plan, todo: list[tuple[Shard, bool]], factory: InverterFactory, call_batch: int, lock: RunLock | None
):
    """Prepare, run and write every shard of ``todo``; yields each committed shard's stats. Actors and
    outstanding tasks are ended on every way out, a failure included."""
    res = plan.spec.resources
    work = plan.kind.work(plan)
    actor_cls = ray.remote(InferenceActor).options(
        num_cpus=res.num_cpus_per_actor,
        num_gpus=res.num_gpus_per_actor,
        max_restarts=RETRIES,
        max_task_retries=RETRIES,
    )
    prepare = ray.remote(prepare_task).options(num_cpus=res.decode_cpus, num_returns=2, max_retries=RETRIES)
    # Writes reserve no CPU: actors hold theirs for their whole life, and a write that waited for
    # one could wait forever. They are I/O and a light encoding pass.
    write = ray.remote(write_task).options(num_cpus=0, max_retries=RETRIES)
    in_flight = res.shards_in_flight or (CALLS_PER_ACTOR + 1) * res.num_actors
    store_args = plan.store.args
    actors = [actor_cls.remote(factory, work.model) for _ in range(res.num_actors)]
    queue = deque(todo)
    preparing: deque = deque()
    calls = {actor: 0 for actor in actors}  # model calls queued on each actor
    running: dict = {}
    writing: dict = {}
    try:
        prepare_ref, write_ref = ray.put(work.prepare), ray.put(work.write)
        while queue or preparing or running or writing:
            if lock is not None and lock.lost:
                raise JobFailed(lock.lost)
            while queue and len(preparing) + len(running) < in_flight:
                shard, retry = queue.popleft()
                meta_ref, payload_ref = prepare.remote(prepare_ref, shard, store_args if retry else None)
                preparing.append((shard, retry, meta_ref, payload_ref, time.time()))
            while preparing and min(calls.values()) < CALLS_PER_ACTOR:
                shard, retry, meta_ref, payload_ref, t0 = preparing.popleft()
                actor = min(calls, key=calls.get)
                calls[actor] += 1
                running[actor.run.remote(payload_ref, call_batch)] = (shard, retry, actor, meta_ref, t0)
            ready, _ = ray.wait([*running, *writing], num_returns=1, timeout=LEASE_CHECK_S)
            for ref in ready:
                if ref in running:
                    shard, retry, actor, meta_ref, t0 = running.pop(ref)
                    calls[actor] -= 1
                    writing[write.remote(write_ref, store_args, shard, meta_ref, ref, t0, retry)] = (shard, meta_ref, ref)
                    continue
                shard, meta_ref, model_ref = writing.pop(ref)
                try:
                    shard_stats = ray.get(ref)
                except Exception as e:
                    step, cause = _failed_step(meta_ref, model_ref, e)
                    why = redact_text(f"{type(cause).__name__}: {cause}")
                    raise JobFailed(f"{shard.name} (from {shard.first}) could not be {step}: {why}") from e
                yield shard_stats
    finally:
        for _, _, meta_ref, payload_ref, _ in preparing:
            ray.cancel(meta_ref)
        for actor in actors:
            ray.kill(actor)


LEASE_CHECK_S = 5.0  # how often a run waiting on Ray looks whether it still holds the output's lease


def _failed_step(meta_ref, model_ref, error: Exception) -> tuple[str, BaseException]:
    """Which step of a shard failed (a write task also fails when the step before it did), and why."""
    for step, ref in (("read and prepared", meta_ref), ("run through the model", model_ref)):
        try:
            ray.get(ref)
        except Exception as e:
            return step, getattr(e, "cause", None) or e
    return "written", getattr(error, "cause", None) or error


def take_lease(plan: Plan) -> RunLock:
    """The output's lease, or PreflightError naming the run that holds it or why it cannot be written."""
    try:
        return RunLock.acquire(plan.store.fs, plan.store.root)
    except LockHeld as e:
        raise PreflightError(f"output.uri: {redact_uri(plan.spec.output.uri)}: {e}") from None
    except Exception as e:
        raise PreflightError(f"output.uri: cannot write to {redact_uri(plan.spec.output.uri)}: {_reason(e)}") from e


def run_job(
    spec: JobSpec,
    kind: JobKind = INVERSION,
    overwrite: bool = False,
    show_progress: bool = True,
    retry_rejects: bool = False,
) -> JobReport:
    plan = plan_job(spec, overwrite=overwrite, retry_rejects=retry_rejects, kind=kind)
    lock = take_lease(plan)
    bar = None
    try:
        # Read the output again under the lease: another run may have committed shards since preflight.
        plan = inspect_output(dataclasses.replace(plan, store=OutputStore(spec.output.uri, spec.output.storage_options, lock.fence())))
        lock.start_heartbeat()
        cluster = start_ray(spec.ray_address)
        bar = ProgressBar(plan) if show_progress else None
        report = run_plan(plan, progress=bar.update_shard if bar else None, lock=lock)
        return dataclasses.replace(report, cluster=cluster)
    finally:
        if bar:
            bar.close()
        lock.release()


def run_inversion(
    spec: InversionSpec, overwrite: bool = False, show_progress: bool = True, retry_rejects: bool = False
) -> JobReport:
    return run_job(spec, INVERSION, overwrite=overwrite, show_progress=show_progress, retry_rejects=retry_rejects)


class ProgressBar:
    """Records/s, shards done, failures and ETA in the driver's terminal."""

    def __init__(self, plan: Plan):
        from tqdm import tqdm

        # Records of webdataset and parquet shards are counted only as they are read.
        self.retrying = {s.name: plan.committed[s.name]["rejected"] for s in plan.retries}
        total = None
        if plan.todo and plan.todo[0].format == "images":
            total = sum(len(s.records) for s in plan.todo) + sum(self.retrying.values())
        self.shards_total = len(plan.shards)
        self.shards_done = len(plan.committed) - len(self.retrying)
        self.rejected = 0
        self.bar = tqdm(total=total, unit="rec", file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
        self._refresh()

    def _refresh(self) -> None:
        self.bar.set_postfix_str(f"shards {self.shards_done}/{self.shards_total}, rejected {self.rejected}")

    def update_shard(self, stats: dict) -> None:
        self.shards_done += 1
        self.rejected += stats["rejected"]
        self._refresh()
        self.bar.update(self.retrying.get(stats["shard"], stats["records"]))

    def close(self) -> None:
        self.bar.close()

