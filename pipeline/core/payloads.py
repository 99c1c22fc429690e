"""What crosses a process boundary between a job's steps: the prepared shard a CPU task hands to the model
and the write step, the model's result, and the engine an engine-preparing task reports. Small frozen
dataclasses (numpy inside, no torch), so each step reads fields rather than keys of a dict.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

Reject = tuple[str, str, str]  # (key, source, why)
Row = tuple[int, str, Mapping[str, Any]]  # (record index, variant name, parameters) of one output row


@dataclass(frozen=True)
class Prepared:
    """A shard after its CPU step: the records that get output (keys and sources, in order) and the rejected
    ones; for jobs that make images also each output row and the preview pictures of the first records."""

    keys: list[str]
    sources: list[str]
    rejects: list[Reject]
    rows: list[Row] = dataclasses.field(default_factory=list)
    previews: list[list[np.ndarray]] = dataclasses.field(default_factory=list)


@dataclass(frozen=True)
class ModelResult:
    """A shard after the model step of a job that makes images: per output row its W+ code and image, and
    per-row metrics when the job evaluates."""

    codes: np.ndarray  # float32 [rows, num_ws, style_dim]
    images: np.ndarray  # uint8 RGB [rows, S, S, 3]
    metrics: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class PreparedEngine:
    """What building and gating the engine once for the cluster gave: the options that passed (after any
    fallback) with the gate's verdict, or why no engine passed."""

    options: Any = None  # engines.engine.EngineOptions
    report: str | None = None
    error: str | None = None
