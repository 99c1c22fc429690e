"""What crosses a process boundary between a job's steps: the prepared shard a CPU task hands to the model
and the write step, the model's result, the engine the first actor reports, and the stats that
commit a shard. Small frozen dataclasses (numpy inside, no torch), so each step reads fields rather than
keys of a dict.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

Reject = tuple[str, str, str]  # (key, source, why)
READ_FIELDS = ("inputs", "source", "key", "size", "version")  # what ShardStats records of a shard's input
Row = tuple[int, str, Mapping[str, Any]]  # (record index, variant name, parameters) of one output row


@dataclass(frozen=True)
class Prepared:
    """A shard after its CPU step: the records that get output (keys and sources, in order) and the rejected
    ones; for jobs that make images also each output row and the preview pictures of the first records
    (with their column titles on the contact sheet; "input" where the job names none)."""

    keys: list[str]
    sources: list[str]
    rejects: list[Reject]
    rows: list[Row] = dataclasses.field(default_factory=list)
    previews: list[list[np.ndarray]] = dataclasses.field(default_factory=list)
    preview_titles: tuple[str, ...] = ()  # what each record's preview pictures show, e.g. ("clean", "degraded")


@dataclass(frozen=True)
class ModelResult:
    """A shard after the model step of a job that makes images: per output row its W+ code and image, and
    per-row metrics when the job evaluates."""

    codes: np.ndarray  # float32 [rows, num_ws, style_dim]
    images: np.ndarray  # uint8 RGB [rows, S, S, 3]
    metrics: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)


def part_of_rows(payload: np.ndarray, index: int, parts: int, batch_size: int) -> np.ndarray:
    """Part ``index`` of ``parts`` of a payload of rows (images, codes), cut between batches so that each
    part runs whole batches; a part may be empty when the payload has fewer batches than parts."""
    batches = -(-len(payload) // batch_size)
    return payload[index * batches // parts * batch_size : (index + 1) * batches // parts * batch_size]


def join_rows(results: list[np.ndarray]) -> np.ndarray:
    """The model results of a payload's parts, in order, as one."""
    return np.concatenate(results)


@dataclass(frozen=True)
class PreparedEngine:
    """What building and gating the engine once for the run gave (in its first actor): the options that
    passed (after any fallback) with the gate's verdict, or why no engine passed."""

    options: Any = None  # engines.engine.EngineOptions
    report: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class ShardStats:
    """What committing a shard recorded in ``_stats/<shard>.json`` (the file whose presence commits it): its
    counts, its files, and what it read, so that later runs know which input is done; its rejects by reason
    and its metric values, so that the job's totals add up from its shards' stats (``pipeline.core.totals``)."""

    shard: str
    records: int  # records read: written + rejected
    written: int  # records with output rows
    rejected: int
    data_file: str  # relative to the output
    rejects_file: str | None = None
    rows: int = 0  # output rows (a record may get several)
    seconds: float = 0.0
    committed_at: str = ""
    inputs: tuple[str, ...] | None = None  # the image files it read, by key (image input)
    source: str | None = None  # the container file it read (WebDataset, Parquet), redacted
    key: str | None = None  # that file's path in the input
    size: int | None = None  # that file's bytes and version when read: a rewritten file is refused
    version: str | None = None
    preview_rows: int | None = None  # records on its contact-sheet preview
    retries: int = 0  # retries of its rejects
    # Its rejects by reason class (``totals.reject_reason``); None in stats written before they were counted.
    reject_reasons: Mapping[str, int] | None = None
    # Per-row metric values in row order (null where not finite), when the job evaluates.
    metrics: Mapping[str, list[float | None]] | None = None

    def to_json(self) -> dict[str, Any]:
        record = {k: v for k, v in dataclasses.asdict(self).items() if v is not None and not (k == "retries" and v == 0)}
        if self.inputs is not None:
            record["inputs"] = list(self.inputs)
        return record

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> "ShardStats":
        """Stats as any version of this project wrote them (later fields default); unknown fields are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in record.items() if k in known}
        if fields.get("inputs") is not None:
            fields["inputs"] = tuple(fields["inputs"])
        return cls(**fields)

    @property
    def read(self) -> dict[str, Any]:
        """What the shard read (``InputFormat.recorded``), as it was recorded."""
        return {k: getattr(self, k) for k in READ_FIELDS if getattr(self, k) is not None}


MATCHED = ("job", "checkpoint_sha256", "stages", "spec_sha256", "latent_dtype")  # what a resumed output must share


@dataclass(frozen=True)
class Provenance:
    """What an output was made from: written to ``_job.json``, the manifest and every data file's metadata.
    A later run adds to the output only if it agrees on ``matched``."""

    job: str
    checkpoint: str  # redacted
    checkpoint_sha256: str
    stages: int
    task: str | None  # the checkpoint's official dataset_type
    image_size: int
    num_ws: int
    style_dim: int
    engine: str
    precision: str
    latent_dtype: str
    package_version: str
    spec_sha256: str
    job_fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # the job's own (edit, restoration, ...)
    accuracy_gate: str | None = None  # the verdict of the engine's gate, when it was gated
    # The spec's fields that spec_sha256 hashes (JobSpec.fingerprinted, URLs redacted), written as "spec" so
    # that a refused spec change can name the fields that changed.
    spec_fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def matched(self) -> tuple[str, ...]:
        return (*MATCHED, *self.job_fields)

    def to_json(self, **more: Any) -> dict[str, Any]:
        own = [f.name for f in dataclasses.fields(self) if f.name not in ("job_fields", "spec_fields")]
        record = {name: getattr(self, name) for name in own}
        if record["accuracy_gate"] is None:
            del record["accuracy_gate"]
        if self.spec_fields:
            record["spec"] = self.spec_fields
        return {**record, **self.job_fields, **more}
