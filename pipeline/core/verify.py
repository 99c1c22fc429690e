"""Checking a job's output against its input: every record in the output rows (as many times as the job
makes rows for it) or in the rejects, exactly once.

Reads the input listing (and, for WebDataset and Parquet shards, the record keys inside them), then each
shard's committed stats, rows, rejects and images, and reports every difference by shard and key.
Writes nothing.
"""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from engines import CheckpointError, checkpoint_sha256
from pipeline.core.errors import PreflightError
from pipeline.core.formats import input_format
from pipeline.core.payloads import ShardStats
from pipeline.core.preflight import output_changes, recorded_spec
from pipeline.core.report import counted
from pipeline.core.job import JobKind
from pipeline.core.shards import Shard, assign_shards
from pipeline.core.storage import join
from pipeline.core.store import IMAGES, METADATA_KEY, OutputStore, latent_codes
from pipeline.core.spec import JobSpec

EXAMPLES = 5  # keys quoted per difference; the counts are always complete
READERS = 8  # shards checked at once (the work is reading files)


@dataclass
class ShardCheck:
    shard: str
    records: int = 0  # in the input
    written: int = 0  # rows in the latents
    rejected: int = 0  # rows in the rejects
    problems: list[str] = field(default_factory=list)
    keys: set[str] = field(default_factory=set, repr=False)  # every key its output holds, to find repeats across shards


@dataclass
class VerifyReport:
    output: str
    shards: list[ShardCheck]
    problems: list[str]  # differences not tied to one input shard
    notes: list[str] = field(default_factory=list)  # worth knowing, not differences

    @property
    def ok(self) -> bool:
        return not self.problems and not any(s.problems for s in self.shards)

    def summary(self) -> str:
        records = sum(s.records for s in self.shards)
        written = sum(s.written for s in self.shards)
        rejected = sum(s.rejected for s in self.shards)
        head = (
            f"{counted(len(self.shards), 'shard')}, {counted(records, 'input record')}; output {self.output} holds "
            f"{counted(written, 'latent')} and {counted(rejected, 'reject')}"
        )
        if self.ok:
            return "\n".join([f"verified: {head}; every input record is there exactly once", *self.notes])
        lines = [f"{s.shard}: {p}" for s in self.shards for p in s.problems] + self.problems
        head = f"verification FAILED: {head}; {counted(len(lines), 'difference')}:"
        return "\n".join([head, *(f"  {line}" for line in lines)])


class VerifyError(ValueError):
    """The output cannot be verified against this spec at all (no output, another model or spec)."""


def _quote(keys) -> str:
    keys = list(keys)
    shown = ", ".join(repr(k) for k in keys[:EXAMPLES])
    return shown + (f" and {len(keys) - EXAMPLES} more" if len(keys) > EXAMPLES else "")


def check_shard(
    shard: Shard, spec: JobSpec, kind: JobKind, store: OutputStore, stats: ShardStats | None, job: dict, gone: bool
) -> ShardCheck:
    """``gone``: a committed shard whose input is no longer listed; a gone file's keys cannot be read, so
    only the output's own consistency is checked."""
    check = ShardCheck(shard.name)
    expected = None
    if not (gone and not input_format(shard.format).records_listed):
        try:
            expected = kind.record_keys(spec, shard, stats)
        except (OSError, ValueError) as e:
            check.problems.append(f"cannot read input {shard.first}: {e}")
            return check
    if stats is None:
        check.records = len(expected)
        partial = " (a data file without stats: a run was interrupted)" if store.fs.exists(store.data_path(shard.name)) else ""
        missing = counted(len(expected), "input record")
        check.problems.append(f"not committed{partial}: {missing} missing; run the job again")
        return check
    check.records = len(expected) if expected is not None else stats.records
    try:
        table = store.read_latents(shard.name)
        rejects = store.read_rejects(shard.name)
    except Exception as e:  # any unreadable file is a difference to report, not a crash
        check.problems.append(f"cannot read its output: {type(e).__name__}: {e}")
        return check
    rows = table.column("key").to_pylist()
    written = sorted(set(rows))
    rejected = [r[0] for r in rejects]
    check.written, check.rejected = len(written), len(rejected)

    provenance = (table.schema.metadata or {}).get(METADATA_KEY)
    if provenance is None:
        check.problems.append(f"{shard.name}.parquet has no {METADATA_KEY.decode()} provenance metadata")
    else:
        meta = json.loads(provenance)
        for name in ("checkpoint_sha256", "stages", "spec_sha256"):
            if meta.get(name) != job.get(name):
                check.problems.append(f"latents written with {name} {meta.get(name)!r}, the job's is {job.get(name)!r}")
    codes = latent_codes(table) if len(written) else None
    if codes is not None:
        if codes.shape[1:] != (job.get("num_ws"), job.get("style_dim")):
            check.problems.append(f"latents of shape {list(codes.shape[1:])}, expected [{job.get('num_ws')}, {job.get('style_dim')}]")
        bad_rows = np.flatnonzero(~np.isfinite(codes.reshape(len(codes), -1)).all(axis=1))
        if len(bad_rows):
            check.problems.append(f"{counted(len(bad_rows), 'latent')} not finite: {_quote(rows[i] for i in bad_rows)}")
    counts = Counter(rows)
    wrong = [k for k in written if counts[k] != kind.rows_per_record(spec, k)]
    if wrong:
        k = wrong[0]
        check.problems.append(
            f"{counted(len(wrong), 'record')} with another number of rows than the job makes: {_quote(wrong)} "
            f"({k!r} has {counts[k]}, expected {kind.rows_per_record(spec, k)})"
        )
    if "image" in table.column_names:
        check.problems += _check_images(store, shard.name, table.column("image").to_pylist())

    seen = Counter(written) + Counter(rejected)
    check.keys = set(seen)
    sources = table.column("source").to_pylist()
    by_key: dict[str, set[str]] = {}
    for key, source in zip(rows, sources):
        by_key.setdefault(key, set()).add(source)
    clashing = sorted(k for k, found in by_key.items() if len(found) > 1)
    if clashing:
        check.problems.append(f"{counted(len(clashing), 'key')} with rows from more than one source: {_quote(clashing)}")
    expected_set = set(expected or ())
    missing = [k for k in expected if k not in seen] if expected is not None else []
    unexpected = [k for k in seen if k not in expected_set] if expected is not None else []
    both = sorted(set(written) & set(rejected))
    repeated = sorted(k for k, n in Counter(rejected).items() if n > 1)
    for label, keys in (
        ("missing from the output and the rejects", missing),
        ("not in the input", unexpected),
        ("in both the latents and the rejects", both),
        ("more than once in the rejects", repeated),
    ):
        if keys:
            check.problems.append(f"{counted(len(keys), 'record')} {label}: {_quote(keys)}")
    if (stats.written, stats.rejected) != (len(written), len(rejected)):
        check.problems.append(
            f"stats say {stats.written} written and {stats.rejected} rejected, "
            f"the files hold {len(written)} and {len(rejected)}"
        )
    return check


def _check_images(store: OutputStore, shard: str, uris: list[str]) -> list[str]:
    """Every row's image exists in the shard's image folder, and that folder holds no others (for a
    shard written before _images/, its folder under images/ too)."""
    paths = [store.image_path(shard, uri) for uri in uris]
    outside = [uri for uri, path in zip(uris, paths) if path is None]
    named = {path for path in paths if path is not None}
    present = set()
    for folder in sorted({IMAGES} | {path.split("/", 1)[0] for path in named}):
        location = join(store.root, folder, shard)
        if store.fs.exists(location):
            present |= {p[len(store.root.rstrip('/')) + 1 :] for p in store.fs.find(location)}
    problems = []
    if outside:
        folder = f"{IMAGES}/{shard}/"
        problems.append(f"{counted(len(outside), 'row')} naming an image outside the output's {folder}: {_quote(outside)}")
    if len(named) + len(outside) != len(uris):
        problems.append(f"{counted(len(uris) - len(named) - len(outside), 'row')} naming an image another row names")
    missing, stray = sorted(named - present), sorted(present - named)
    if missing:
        problems.append(f"{counted(len(missing), 'image')} named by rows but not there: {_quote(missing)}")
    if stray:
        problems.append(f"{counted(len(stray), 'image')} in the shard's image folder that no row names: {_quote(stray)}")
    return problems


def verify_output(spec: JobSpec, kind: JobKind) -> VerifyReport:
    """Compare the output with the input the spec names. Raises VerifyError when there is nothing to compare."""
    store = OutputStore(spec.output.uri, spec.output.storage_options)
    job = store.read_job()
    if job is None:
        raise VerifyError(f"output.uri: {spec.output.uri} holds no {kind.name} output (no _job.json)")
    if job.get("spec_sha256") != spec.output_fingerprint():
        current = {"spec_sha256": spec.output_fingerprint(), "spec": recorded_spec(spec)}
        raise VerifyError(
            f"output.uri: {spec.output.uri} was written from a different spec:\n"
            + "\n".join(f"  {change}" for change in output_changes(job, current, ("spec_sha256",)))
        )
    try:
        sha = checkpoint_sha256(spec.model.checkpoint, spec.model.storage_options)
    except CheckpointError as e:
        raise VerifyError(f"model.checkpoint: {e}") from e
    if job.get("checkpoint_sha256") != sha:
        raise VerifyError(
            f"output.uri: {spec.output.uri} was written by a checkpoint with sha256 {job.get('checkpoint_sha256')}, "
            f"not {spec.model.checkpoint} ({sha})"
        )
    committed = store.committed()
    try:
        listing = kind.list_input(spec)
        shards, gone = assign_shards(listing, listing[0].format, getattr(spec.input, "shard_size", 1), committed)
    except (ValueError, OSError, PreflightError) as e:
        raise VerifyError(f"input.uri: {e}") from e
    with ThreadPoolExecutor(READERS) as pool:
        checks = list(pool.map(lambda s: check_shard(s, spec, kind, store, committed.get(s.name), job, s.name in gone), shards))

    names = {s.name for s in shards}
    problems = []
    holders: dict[str, list[str]] = {}
    for check in checks:
        for key in check.keys:
            holders.setdefault(key, []).append(check.shard)
    repeated = sorted(k for k, where in holders.items() if len(where) > 1)
    if repeated:
        k = repeated[0]
        problems.append(
            f"{counted(len(repeated), 'key')} in more than one shard: {_quote(repeated)} ({k!r} is in {', '.join(holders[k])})"
        )
    unlisted = store.listed("", ".parquet") - names - set(committed)
    recorded = store.listed("_files", ".json")
    stray = [f"{name}.parquet" for name in sorted(unlisted & recorded)]
    foreign = [f"{name}.parquet" for name in sorted(unlisted - recorded)]
    if stray:
        problems.append(f"{counted(len(stray), 'data file')} for shards the input does not have: {_quote(stray)}")
    notes = [f"{counted(len(gone), 'committed shard')} that read input no longer listed: {_quote(gone)}"] if gone else []
    if foreign:  # not the job's to judge or remove, but a reader of the folder would take them for data
        notes.append(f"{counted(len(foreign), 'file')} named like data files that the job did not write: {_quote(foreign)}")
    return VerifyReport(spec.output.uri, checks, problems, notes)
