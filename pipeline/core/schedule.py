"""Running a plan on Ray: prepare tasks feed inference actors, writers commit each shard.

    driver: list shards, skip committed ones, keep ``shards_in_flight`` shards preparing ahead
    prepare task (CPU)   shard -> (keys, sources, rejects), model input       [object store]
    inference actor      model input -> W+ codes (and images)                 [object store]
    writer (CPU)         results + keys -> Parquet (and images), rejects, then stats (commit)

What each step does is the job's ``JobKind.work``; listing, resume, commit, rejects and retries are shared.
Preparing runs ahead of the model and writing runs behind it, so neither waits on the other; each
actor has a second shard queued behind the one it is working on. The first shards are read while the
first actor builds the engine and puts it through the accuracy gate; the other actors start once it has
passed. When no shard is left to read, the last ones are spread over the actors in parts (for jobs whose
work can be parted), so a large final shard does not leave all but one actor idle. An actor
(inference or writer) that dies is restarted by Ray and its call retried (``max_restarts``,
``max_task_retries``); a decode task whose worker dies is retried by Ray; a step that meets a transient
storage error retries itself with backoff (``pipeline.core.tasks``); a shard is written whole or not at all.

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

from pipeline.core.actors import InferenceActor, InverterFactory
from pipeline.core.cluster import start_ray
from pipeline.core.errors import JobFailed, PreflightError, reason
from pipeline.core.job import JobKind, Plan, Work
from pipeline.core.lock import LockHeld, RunLock
from pipeline.core.payloads import ShardStats
from pipeline.core.preflight import engine_options, inspect_output, plan_job
from pipeline.core.report import JobReport, ProgressBar
from pipeline.core.secrets import redact_text, redact_uri
from pipeline.core.shards import Shard
from pipeline.core.spec import JobSpec
from pipeline.core.store import OutputStore
from pipeline.core.tasks import Writer, prepare_task
from pipeline.core.totals import metrics_total, reasons_total


RETRIES = 3


# A second call waits in the actor's queue, so the model starts the next shard as soon as it finishes
# one, without a round trip through a driver that may be short of CPU.
CALLS_PER_ACTOR = 2
COMMITS_PER_WRITER = 4  # a writer's threads: a commit mostly waits on storage


def shards_in_flight(res, cluster_cpus: float) -> int:
    """Shards read ahead at once (``resources.shards_in_flight``), by default as many as the CPUs the
    actors leave free decode side by side, plus those queued on each actor."""
    if res.shards_in_flight:
        return res.shards_in_flight
    free = cluster_cpus - res.num_actors * res.num_cpus_per_actor
    return CALLS_PER_ACTOR * res.num_actors + max(1, math.floor(free / res.decode_cpus + 1e-9))


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


def run_plan(plan: Plan, progress: Callable[[ShardStats], None] | None = None, lock: RunLock | None = None) -> JobReport:
    """Run a plan whose output lease is held (``lock``; tests may run a plan without one)."""
    spec, res = plan.spec, plan.spec.resources
    started = time.time()
    todo = [(shard, False) for shard in plan.todo] + [(shard, True) for shard in plan.retries]
    if plan.committed == {} and not todo:
        raise JobFailed("nothing to do: the input has no shards")
    retried = sum(plan.committed[s.name].rejected for s, retry in todo if retry)
    stats = dict(plan.committed)
    first_commit = None
    runner = None
    try:
        if todo:
            _check_cluster_fits(res)
            factory = InverterFactory(
                checkpoint=spec.model.checkpoint,
                stages=plan.provenance.stages,
                device="cuda" if res.num_gpus_per_actor > 0 else "cpu",
                threads=math.ceil(res.num_cpus_per_actor),
                storage_options=dict(spec.model.storage_options),
                engine=engine_options(spec),
            )
            runner = ShardRunner(plan, todo, factory, lock)
            plan = runner.start_engine()
        if plan.overwrite:  # only now: a spec whose engine cannot be built or gated keeps the old output
            plan.store.clear(plan.kind.finish_files)
        plan.store.write_job(plan.provenance.to_json())
        plan.store.remove_uncommitted()  # what an interrupted run wrote for shards it did not commit
        if runner:
            for shard_stats in runner.run():
                stats[shard_stats.shard] = shard_stats
                if first_commit is None:
                    first_commit = time.time() - started
                if progress:
                    progress(shard_stats)
    finally:
        if runner:
            runner.close()

    records = sum(s.records for s in stats.values())
    rejected = sum(s.rejected for s in stats.values())
    recovered = sum(stats[s.name].written - plan.committed[s.name].written for s, retry in todo if retry)
    processed = sum(stats[s.name].records for s, retry in todo if not retry) + retried
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
        plan.kind.finish(plan, ordered)
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
        processed=processed,
        reject_reasons=reasons_total(list(stats.values()), plan.store.read_rejects),
        metrics=metrics_total(list(stats.values())),
    )


@dataclasses.dataclass
class _Calls:
    """A shard on its way through the actors: the model calls of its parts, and those still running."""

    shard: Shard
    retry: bool
    meta_ref: object
    refs: list
    pending: set
    started: float


class ShardRunner:
    """Prepare, run and write every shard of ``todo``. Made as soon as the plan is known: the first shards'
    prepare tasks and the first actor, which builds and gates the engine, start at once (with torch
    engines the other actors too); ``start_engine`` waits for that engine, ``run`` yields each committed
    shard's stats and ``close`` ends the actors and the outstanding tasks on every way out, a failure
    included. Nothing is written before ``start_engine`` returns: prepare tasks only read."""

    def __init__(self, plan: Plan, todo: list[tuple[Shard, bool]], factory: InverterFactory, lock: RunLock | None):
        res = plan.spec.resources
        self.plan, self.factory, self.lock, self.res = plan, factory, lock, res
        self.work: Work = plan.kind.work(plan)
        self.actor_cls = ray.remote(InferenceActor).options(
            num_cpus=res.num_cpus_per_actor,
            num_gpus=res.num_gpus_per_actor,
            max_restarts=RETRIES,
            max_task_retries=RETRIES,
        )
        self.prepare = ray.remote(prepare_task).options(num_cpus=res.decode_cpus, num_returns=2, max_retries=RETRIES)
        # Writers reserve no CPU: actors hold theirs for their whole life, and a write that waited for
        # one could wait forever. They are I/O and a light encoding pass; one per inference actor,
        # spread over the nodes.
        writer_cls = ray.remote(Writer).options(
            num_cpus=0, max_restarts=RETRIES, max_task_retries=RETRIES, max_concurrency=COMMITS_PER_WRITER,
            scheduling_strategy="SPREAD",
        )
        self.writers = {writer_cls.remote(): 0 for _ in range(res.num_actors)}  # writer -> commits it runs
        self.in_flight = shards_in_flight(res, ray.cluster_resources().get("CPU", 0))
        self.queue = deque(todo)
        self.preparing: deque = deque()
        self.running: dict = {}  # model call -> (its shard's _Calls, actor)
        self.writing: dict = {}  # commit -> (its shard's _Calls, writer)
        self.prepare_ref = ray.put(self.work.prepare)
        options = factory.engine
        self.gated = not (options.is_reference and not options.pick_batch)
        self.actors = [self._actor(dataclasses.replace(factory, gate=self.gated))]
        # An eager or compiled torch engine leaves nothing in the cache for the others to load, so they
        # build theirs while the first one gates; exported engines (ONNX, TensorRT, AOT) are built once.
        self.early = options.backend == "torch" and not options.pick_batch
        if self.early:
            self.actors += [self._actor(factory) for _ in range(res.num_actors - 1)]
        self.calls: dict = {}  # model calls queued on each actor
        self.call_batch = res.batch_size
        self._start_prepares()

    def start_engine(self) -> Plan:
        """Wait until the first actor's engine has passed the gate, start the other actors with what it
        built, and return the plan whose provenance names that engine (PreflightError if none passed)."""
        plan, factory = self.plan, self.factory
        if self.gated:
            result = ray.get(self.actors[0].engine.remote())
            if result.error:
                raise PreflightError(f"engine: {result.error}")
            factory = dataclasses.replace(factory, engine=result.options)
            plan = dataclasses.replace(plan, provenance=dataclasses.replace(
                plan.provenance, engine=result.options.name, precision=result.options.precision,
                accuracy_gate=result.report,
            ))
            # A batch the engine picked on its GPU is also what each model call gets.
            if self.factory.engine.pick_batch:
                self.call_batch = result.options.max_batch
        if self.early and factory.engine != self.factory.engine:  # a fallback precision passed, not the one asked for
            for actor in self.actors[1:]:
                ray.kill(actor)
            del self.actors[1:]
        self.actors += [self._actor(factory) for _ in range(self.res.num_actors - len(self.actors))]
        self.calls = {actor: 0 for actor in self.actors}
        # The write step records the engine that passed in every file it writes, so it is made from this plan.
        self.plan = plan
        self.write_ref = ray.put(plan.kind.work(plan).write)
        return plan

    def _actor(self, factory: InverterFactory):
        return self.actor_cls.remote(factory, self.work.model, self.work.part)

    def _start_prepares(self) -> None:
        store_args = self.plan.store.args
        while self.queue and len(self.preparing) + len(self.running) < self.in_flight:
            shard, retry = self.queue.popleft()
            meta_ref, payload_ref = self.prepare.remote(self.prepare_ref, shard, store_args if retry else None)
            self.preparing.append((shard, retry, meta_ref, payload_ref, time.time()))

    def _parts(self) -> int:
        """How many actors share the next prepared shard: one, unless no shard is left to read and fewer
        shards remain than actors (the run's tail), when each gets an equal share of the actors."""
        if self.queue or self.work.part is None:
            return 1
        return max(1, len(self.actors) // len(self.preparing))

    def _start_calls(self) -> None:
        while self.preparing and min(self.calls.values()) < CALLS_PER_ACTOR:
            parts = self._parts()
            shard, retry, meta_ref, payload_ref, started = self.preparing.popleft()
            calls = _Calls(shard, retry, meta_ref, [], set(), started)
            for index in range(parts):
                actor = min(self.calls, key=self.calls.get)
                self.calls[actor] += 1
                ref = actor.run.remote(payload_ref, self.call_batch, (index, parts) if parts > 1 else None)
                calls.refs.append(ref)
                calls.pending.add(ref)
                self.running[ref] = (calls, actor)

    def run(self):
        store_args = self.plan.store.settled().args
        while self.queue or self.preparing or self.running or self.writing:
            if self.lock is not None and self.lock.lost:
                raise JobFailed(self.lock.lost)
            self._start_prepares()
            self._start_calls()
            ready, _ = ray.wait([*self.running, *self.writing], num_returns=1, timeout=LEASE_CHECK_S)
            for ref in ready:
                if ref in self.running:
                    calls, actor = self.running.pop(ref)
                    self.calls[actor] -= 1
                    calls.pending.discard(ref)
                    if not calls.pending:
                        writer = min(self.writers, key=self.writers.get)
                        self.writers[writer] += 1
                        commit = writer.write.remote(
                            self.write_ref, self.work.join, store_args, calls.shard, calls.meta_ref,
                            calls.started, calls.retry, *calls.refs,
                        )
                        self.writing[commit] = (calls, writer)
                    continue
                calls, writer = self.writing.pop(ref)
                self.writers[writer] -= 1
                try:
                    shard_stats = ray.get(ref)
                except Exception as e:
                    step, cause = _failed_step(calls.meta_ref, calls.refs, e)
                    why = redact_text(f"{type(cause).__name__}: {cause}")
                    shard = calls.shard
                    raise JobFailed(f"{shard.name} (from {shard.first}) could not be {step}: {why}") from e
                yield shard_stats

    def close(self) -> None:
        for _, _, meta_ref, _, _ in self.preparing:
            ray.cancel(meta_ref)
        for actor in [*self.actors, *self.writers]:
            ray.kill(actor)


LEASE_CHECK_S = 5.0  # how often a run waiting on Ray looks whether it still holds the output's lease


def _failed_step(meta_ref, model_refs: list, error: Exception) -> tuple[str, BaseException]:
    """Which step of a shard failed (a commit also fails when the step before it did), and why."""
    for step, ref in (("read and prepared", meta_ref), *(("run through the model", ref) for ref in model_refs)):
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
