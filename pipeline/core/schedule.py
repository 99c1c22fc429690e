"""Running a plan on Ray: prepare tasks feed inference actors, write tasks commit each shard.

    driver: list shards, skip committed ones, keep ``shards_in_flight`` shards preparing ahead
    prepare task (CPU)   shard -> (keys, sources, rejects), model input       [object store]
    inference actor      model input -> W+ codes (and images)                 [object store]
    write task (CPU)     results + keys -> Parquet (and images), rejects, then stats (commit)

What each step does is the job's ``JobKind.work``; listing, resume, commit, rejects and retries are shared.
Preparing runs ahead of the model and writing runs behind it, so neither waits on the other; each
actor has a second shard queued behind the one it is working on. An actor
that dies is restarted by Ray and its call retried (``max_restarts``, ``max_task_retries``); a decode or
write task whose worker dies is retried by Ray, one that meets a transient storage error retries itself
with backoff (``pipeline.core.tasks``); a shard is written whole or not at all.

A run holds the output's lease (``pipeline.core.lock``) from after preflight to its end, so two runs never
write one output; it removes only files the job recorded writing (``pipeline.core.store``), and nothing at
all before its engine is built and has passed the accuracy gate.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import deque
from typing import Callable

import ray

from pipeline.core.actors import InferenceActor, InverterFactory, prepare_engine
from pipeline.core.cluster import start_ray
from pipeline.core.errors import JobFailed, PreflightError, reason
from pipeline.core.job import JobKind, Plan
from pipeline.core.lock import LockHeld, RunLock
from pipeline.core.payloads import Provenance, ShardStats
from pipeline.core.preflight import engine_options, inspect_output, plan_job
from pipeline.core.report import JobReport, ProgressBar
from pipeline.core.secrets import redact_text, redact_uri
from pipeline.core.shards import Shard
from pipeline.core.spec import JobSpec
from pipeline.core.store import OutputStore
from pipeline.core.tasks import prepare_task, write_task


RETRIES = 3


# A second call waits in the actor's queue, so the model starts the next shard as soon as it finishes
# one, without a round trip through a driver that may be short of CPU.
CALLS_PER_ACTOR = 2


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


def _prepare(factory: InverterFactory, res, provenance: Provenance) -> tuple[InverterFactory, Provenance]:
    """Build and gate the engine once, on a worker shaped like the actors, before any actor starts: the
    factory of the engine that passed and the provenance naming it."""
    options = factory.engine
    if options.is_reference and not options.pick_batch:
        return factory, provenance
    task = ray.remote(prepare_engine).options(num_cpus=res.num_cpus_per_actor, num_gpus=res.num_gpus_per_actor)
    result = ray.get(task.remote(factory))
    if result.error:
        raise PreflightError(f"engine: {result.error}")
    options = result.options
    provenance = dataclasses.replace(
        provenance, engine=options.name, precision=options.precision, accuracy_gate=result.report
    )
    return dataclasses.replace(factory, engine=options), provenance


def run_plan(plan: Plan, progress: Callable[[ShardStats], None] | None = None, lock: RunLock | None = None) -> JobReport:
    """Run a plan whose output lease is held (``lock``; tests may run a plan without one)."""
    spec, res = plan.spec, plan.spec.resources
    started = time.time()
    todo = [(shard, False) for shard in plan.todo] + [(shard, True) for shard in plan.retries]
    if plan.committed == {} and not todo:
        raise JobFailed("nothing to do: the input has no shards")
    retried = sum(plan.committed[s.name].rejected for s, retry in todo if retry)
    if todo:
        _check_cluster_fits(res)
        use_gpu = res.num_gpus_per_actor > 0
        options = engine_options(spec)
        factory = InverterFactory(
            checkpoint=spec.model.checkpoint,
            stages=plan.provenance.stages,
            device="cuda" if use_gpu else "cpu",
            threads=math.ceil(res.num_cpus_per_actor),
            storage_options=dict(spec.model.storage_options),
            engine=options,
        )
        factory, provenance = _prepare(factory, res, plan.provenance)
        plan = dataclasses.replace(plan, provenance=provenance)
        # A batch the engine picked on its GPU is also what each model call gets.
        call_batch = factory.engine.max_batch if options.pick_batch else res.batch_size
    if plan.overwrite:  # only now: a spec whose engine cannot be built or gated keeps the old output
        plan.store.clear()
    plan.store.write_job(plan.provenance.to_json())
    plan.store.remove_uncommitted()  # what an interrupted run wrote for shards it did not commit
    stats = dict(plan.committed)
    first_commit = None
    if todo:
        for shard_stats in _run_shards(plan, todo, factory, call_batch, lock):
            stats[shard_stats.shard] = shard_stats
            if first_commit is None:
                first_commit = time.time() - started
            if progress:
                progress(shard_stats)

    records = sum(s.records for s in stats.values())
    rejected = sum(s.rejected for s in stats.values())
    recovered = sum(stats[s.name].written - plan.committed[s.name].written for s, retry in todo if retry)
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
        plan.store.write_manifest(plan.provenance.to_json(), ordered)
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
        first_commit_seconds=first_commit,
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
        raise PreflightError(f"output.uri: cannot write to {redact_uri(plan.spec.output.uri)}: {reason(e)}") from e


def run_job(
    spec: JobSpec,
    kind: JobKind,
    overwrite: bool = False,
    show_progress: bool = True,
    retry_rejects: bool = False,
) -> JobReport:
    plan = plan_job(spec, kind, overwrite=overwrite, retry_rejects=retry_rejects)
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
