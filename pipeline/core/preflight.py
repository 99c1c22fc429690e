"""Everything checked before any work starts: the input listed, the checkpoint read, the output inspected,
overlaps refused. Raises PreflightError naming the spec field; writes nothing."""

from __future__ import annotations

import dataclasses
import hashlib
import math

from engines import CheckpointError, load_e2style
from engines.engine import EngineOptions
from engines.gate import GateThresholds
from pipeline.core.errors import PreflightError, reason
from pipeline.core.job import JobKind, Plan
from pipeline.core.payloads import Provenance
from pipeline.core.secrets import redact_uri
from pipeline.core.shards import InputError, assign_shards
from pipeline.core.spec import JobSpec
from pipeline.core.storage import location, overlap
from pipeline.core.store import OutputStore


PACKAGE_VERSION = "0.1.0"


def plan_job(
    spec: JobSpec, kind: JobKind, overwrite: bool = False, retry_rejects: bool = False
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
        raise PreflightError(f"input.uri: {reason(e)}") from e
    try:
        digest = hashlib.sha256()  # one read of the file gives the model and its hash
        model, info = load_e2style(
            spec.model.checkpoint, spec.model.stages, storage_options=spec.model.storage_options, digest=digest
        )
        sha = digest.hexdigest()
    except CheckpointError as e:
        raise PreflightError(f"model.checkpoint: {e}") from e
    except Exception as e:
        raise PreflightError(f"model.checkpoint: cannot read {redact_uri(spec.model.checkpoint)}: {reason(e)}") from e
    cfg = model.config
    del model
    checked = kind.check(spec, cfg, info, listing)
    provenance = Provenance(
        job=kind.name,
        checkpoint=redact_uri(spec.model.checkpoint),
        checkpoint_sha256=sha,
        stages=cfg.stages,
        task=info.task,
        image_size=cfg.image_size,
        num_ws=cfg.num_ws,
        style_dim=cfg.style_dim,
        engine=engine_options(spec).name,
        precision=spec.engine.precision,
        latent_dtype=spec.output.latent_dtype,
        package_version=PACKAGE_VERSION,
        spec_sha256=spec.output_fingerprint(),
        job_fields=checked.provenance,
    )
    try:
        store = OutputStore(spec.output.uri, spec.output.storage_options)
        _check_reachable(store)
    except Exception as e:
        raise PreflightError(f"output.uri: cannot use {redact_uri(spec.output.uri)}: {reason(e)}") from e
    plan = Plan(
        spec, [], {}, provenance, store, kind, checked.found, retry_rejects=retry_rejects, overwrite=overwrite, listing=listing,
    )
    return inspect_output(plan)


def inspect_output(plan: Plan) -> Plan:
    """The plan with the output as it is now: its committed shards, and the shards of this run. Refuses
    output of another job or spec, and paths the run would write that hold files it did not write."""
    spec, store, provenance = plan.spec, plan.store, plan.provenance.to_json()
    try:
        previous = None if plan.overwrite else store.read_job()
        committed = store.committed()
    except Exception as e:
        raise PreflightError(f"output.uri: cannot use {redact_uri(spec.output.uri)}: {reason(e)}") from e
    if previous is not None:
        for field_name in plan.provenance.matched:
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


def _check_reachable(store: OutputStore) -> None:
    protocol = store.fs.protocol if isinstance(store.fs.protocol, str) else store.fs.protocol[0]
    if protocol in ("file", "local", "memory"):
        return
    bucket = store.root.split("/", 1)[0]
    if not store.fs.exists(bucket):
        raise OSError(f"bucket {bucket!r} does not exist or is not reachable")


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
