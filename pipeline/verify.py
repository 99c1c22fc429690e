"""Checking an inversion output against its input: every record exactly once in the latents or the rejects.

Reads the input listing (and, for WebDataset and Parquet shards, the record keys inside them), then each
shard's committed stats, latents and rejects, and reports every difference by shard and key. Writes
nothing.
"""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from engines import CheckpointError, checkpoint_sha256
from pipeline.decode import read_records
from pipeline.shards import Shard, assign_shards, list_shards
from pipeline.sink import LATENT_COLUMN, METADATA_KEY, OutputStore
from pipeline.spec import InversionSpec
from pipeline.storage import join

EXAMPLES = 5  # keys quoted per difference; the counts are always complete
READERS = 8  # shards checked at once (the work is reading files)


@dataclass
class ShardCheck:
    shard: str
    records: int = 0  # in the input
    written: int = 0  # rows in the latents
    rejected: int = 0  # rows in the rejects
    problems: list[str] = field(default_factory=list)


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
            f"{len(self.shards)} shards, {records} input records; output {self.output} holds "
            f"{written} latents and {rejected} rejects"
        )
        if self.ok:
            return "\n".join([f"verified: {head}; every input record is there exactly once", *self.notes])
        lines = [f"{s.shard}: {p}" for s in self.shards for p in s.problems] + self.problems
        return "\n".join([f"verification FAILED: {head}; {len(lines)} difference(s):", *(f"  {line}" for line in lines)])


class VerifyError(ValueError):
    """The output cannot be verified against this spec at all (no output, another model or spec)."""


def _quote(keys) -> str:
    keys = list(keys)
    shown = ", ".join(repr(k) for k in keys[:EXAMPLES])
    return shown + (f" and {len(keys) - EXAMPLES} more" if len(keys) > EXAMPLES else "")


def input_keys(shard: Shard, spec: InversionSpec, stats: dict | None) -> list[str]:
    """The keys the job gives the shard's records: as recorded when it was committed (images), or read
    from its WebDataset or Parquet file."""
    if shard.format == "images":
        return list(stats["inputs"]) if stats else [r.key for r in shard.records]
    records = read_records(shard, spec.input.storage_options, spec.input.image_column, spec.input.key_column)
    return [key for key, _, _ in records]


def check_shard(
    shard: Shard, spec: InversionSpec, store: OutputStore, stats: dict | None, job: dict, gone: bool
) -> ShardCheck:
    """``gone``: a committed shard whose input is no longer listed; a gone file's keys cannot be read, so
    only the output's own consistency is checked."""
    check = ShardCheck(shard.name)
    expected = None
    if not (gone and shard.format != "images"):
        try:
            expected = input_keys(shard, spec, stats)
        except (OSError, ValueError) as e:
            check.problems.append(f"cannot read input {shard.first}: {e}")
            return check
    if stats is None:
        check.records = len(expected)
        partial = " (a data file without stats: a run was interrupted)" if store.fs.exists(store.data_path(shard.name)) else ""
        check.problems.append(f"not committed{partial}: {len(expected)} input records missing; run the job again")
        return check
    check.records = len(expected) if expected is not None else stats.get("records", 0)
    try:
        table = store.read_latents(shard.name)
        rejects = store.read_rejects(shard.name)
    except Exception as e:  # any unreadable file is a difference to report, not a crash
        check.problems.append(f"cannot read its output: {type(e).__name__}: {e}")
        return check
    written = table.column("key").to_pylist()
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
    codes = table.column(LATENT_COLUMN).combine_chunks().to_numpy_ndarray() if len(written) else None
    if codes is not None:
        if codes.shape[1:] != (job.get("num_ws"), job.get("style_dim")):
            check.problems.append(f"latents of shape {list(codes.shape[1:])}, expected [{job.get('num_ws')}, {job.get('style_dim')}]")
        bad_rows = np.flatnonzero(~np.isfinite(codes.reshape(len(codes), -1)).all(axis=1))
        if len(bad_rows):
            check.problems.append(f"{len(bad_rows)} latent(s) not finite: {_quote(written[i] for i in bad_rows)}")

    seen = Counter(written) + Counter(rejected)
    expected_set = set(expected or ())
    missing = [k for k in expected if k not in seen] if expected is not None else []
    unexpected = [k for k in seen if k not in expected_set] if expected is not None else []
    both = sorted(set(written) & set(rejected))
    repeated = sorted(k for k, n in (Counter(written) | Counter(rejected)).items() if n > 1)
    for label, keys in (
        ("missing from the output and the rejects", missing),
        ("not in the input", unexpected),
        ("in both the latents and the rejects", both),
        ("more than once in the latents or the rejects", repeated),
    ):
        if keys:
            check.problems.append(f"{len(keys)} record(s) {label}: {_quote(keys)}")
    if (stats.get("written"), stats.get("rejected")) != (len(written), len(rejected)):
        check.problems.append(
            f"stats say {stats.get('written')} written and {stats.get('rejected')} rejected, "
            f"the files hold {len(written)} and {len(rejected)}"
        )
    return check


def verify_output(spec: InversionSpec) -> VerifyReport:
    """Compare the output with the input the spec names. Raises VerifyError when there is nothing to compare."""
    store = OutputStore(spec.output.uri, spec.output.storage_options)
    job = store.read_job()
    if job is None:
        raise VerifyError(f"output.uri: {spec.output.uri} holds no inversion output (no _job.json)")
    if job.get("spec_sha256") != spec.output_fingerprint():
        raise VerifyError(
            f"output.uri: {spec.output.uri} was written from a different spec (input, model or output settings differ)"
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
        listing = list_shards(spec.input.uri, spec.input.format, spec.input.shard_size, spec.input.storage_options)
        shards, gone = assign_shards(listing, spec.input.format, spec.input.shard_size, committed)
    except (ValueError, OSError) as e:
        raise VerifyError(f"input.uri: {e}") from e
    with ThreadPoolExecutor(READERS) as pool:
        checks = list(pool.map(lambda s: check_shard(s, spec, store, committed.get(s.name), job, s.name in gone), shards))

    names = {s.name for s in shards}
    problems = []
    stray = sorted(
        p.rsplit("/", 1)[-1]
        for p in store.fs.glob(join(store.root, "shard-*.parquet"))
        if p.rsplit("/", 1)[-1].removesuffix(".parquet") not in names | set(committed)
    )
    if stray:
        problems.append(f"{len(stray)} data file(s) for shards the input does not have: {_quote(stray)}")
    notes = [f"{len(gone)} committed shard(s) read input that is no longer listed: {_quote(gone)}"] if gone else []
    return VerifyReport(spec.output.uri, checks, problems, notes)
