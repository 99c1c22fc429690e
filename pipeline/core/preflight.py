"""Everything checked before any work starts: the input listed, the checkpoint read, the output inspected,
overlaps refused. Raises PreflightError naming the spec field; writes nothing."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from typing import Any, Mapping

from engines import CheckpointError, load_e2style
from engines.engine import EngineOptions
from engines.gate import GateThresholds
from pipeline.core.errors import PreflightError, reason
from pipeline.core.job import JobKind, Plan
from pipeline.core.payloads import Provenance
from pipeline.core.report import counted
from pipeline.core.secrets import redact_text, redact_uri
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
    check_output_outlives_a_submitted_job(spec)
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
        spec_fields=recorded_spec(spec),
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
    changes = [] if previous is None else output_changes(previous, provenance, plan.provenance.matched)
    if changes:
        raise PreflightError(
            f"output.uri: {redact_uri(spec.output.uri)} holds output that this spec would make differently:\n"
            + "".join(f"  {change}\n" for change in changes)
            + "rerun with --overwrite to replace it, choose another output.uri, or set these back to resume it"
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
            f"output.uri: {counted(len(foreign), 'path')} this run would write "
            f"{'holds' if len(foreign) == 1 else 'hold'} files it did not write, e.g. "
            f"{store.fs.unstrip_protocol(foreign[0])}; move them away or choose another output.uri"
        )
    return dataclasses.replace(plan, shards=shards, committed={} if plan.overwrite else committed, gone=gone)


def output_changes(previous: Mapping[str, Any], provenance: Mapping[str, Any], matched: tuple[str, ...]) -> list[str]:
    """How the output's ``_job.json`` (``previous``) and this run's provenance differ in what a resumed
    output must share, one line per field: "input.resize: false there, true in this spec". A changed
    spec is told by the fields that changed, where the output recorded them (outputs written before that
    record say only that some field did). A provenance field that repeats a changed spec field with the
    same values (latent_dtype and output.latent_dtype) is told once."""
    before, after, spec_changed = {}, {}, False
    for name in matched:
        if name == "job" and "job" not in previous:  # written before jobs other than inversion
            continue
        if previous.get(name) == provenance[name]:
            continue
        if name == "spec_sha256":
            spec_changed = True
        else:
            before[name], after[name] = previous.get(name, MISSING), provenance[name]
    recorded = previous.get("spec")
    spec = []
    if spec_changed and isinstance(recorded, dict):
        spec = _differences(_flat(recorded), _flat(provenance.get("spec", {})))
    told = {(path.rsplit(".", 1)[-1], old, new) for path, old, new in spec}
    others = [d for d in _differences(_flat(before), _flat(after)) if (d[0].rsplit(".", 1)[-1], d[1], d[2]) not in told]
    lines = [f"{path}: {old} there, {new} in this spec" for path, old, new in [*spec, *others]]
    if spec_changed and not spec and not isinstance(recorded, dict):
        lines.insert(0, "a field of the spec's sections that decide the output changed (this output was written "
                        "before _job.json recorded them, so which one cannot be told)")
    elif spec_changed and not spec:
        lines.insert(0, "the spec's fingerprint changed (the same fields, hashed differently by another version of the job)")
    return lines


MISSING = "(not recorded)"


def _flat(fields: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one, by dotted path: {"input": {"resize": True}} -> {"input.resize": True}."""
    flat = {}
    for key, value in fields.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flat(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def _differences(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(path, value before, value after) of each path whose value differs, values as YAML spells them
    (JSON's null, true, "text")."""
    def shown(value: Any) -> str:
        return value if value is MISSING else json.dumps(value, sort_keys=True)

    return [
        (path, shown(before.get(path, MISSING)), shown(after.get(path, MISSING)))
        for path in sorted(before.keys() | after.keys())
        if before.get(path, MISSING) != after.get(path, MISSING)
    ]


def recorded_spec(spec: JobSpec) -> dict[str, Any]:
    """What ``_job.json`` records of the spec: the fields its fingerprint hashes, as JSON has them, every
    URL redacted (a presigned direction file's signature too)."""
    return _redacted(json.loads(json.dumps(spec.fingerprinted())))


def _redacted(value: Any) -> Any:
    """``value`` with every URL in its strings redacted (a presigned URL's signature, a user's password)."""
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return redact_text(value) if isinstance(value, str) else value


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


SUBMITTED_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray for the entrypoint of a `ray job submit`


def check_output_outlives_a_submitted_job(spec: JobSpec, environ: Mapping[str, str] = os.environ) -> None:
    """A job sent with `ray job submit` runs in a folder of Ray's (its copy of --working-dir, or the job
    server's own), which Ray removes: a relative output path would put the output there and lose it."""
    uri = spec.output.uri
    if SUBMITTED_JOB_ENV not in environ or "://" in uri or os.path.isabs(uri):
        return
    raise PreflightError(
        f"output.uri: {uri!r} is a relative path, and this job was submitted with `ray job submit`: it runs in "
        f"a temporary folder of Ray's ({os.getcwd()}), which Ray deletes, so the output would be lost. "
        "Give an absolute path or a URI (e.g. \"$PWD/outputs/...\" when writing the spec, or s3://...)"
    )
