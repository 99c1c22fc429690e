"""What a job's shards add up to beyond counts: its rejects grouped by reason, and the statistics of the
per-row metrics of a run that evaluates. Each shard's stats hold its part (``ShardStats.reject_reasons``,
``ShardStats.metrics``), so the totals of a resumed run are those of a run done in one go."""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Iterable

import numpy as np

from pipeline.core.payloads import Reject, ShardStats
from pipeline.core.secrets import redact_text

MAX_REASON_CHARS = 100
# Where the first clause of a reject's error ends: "cannot read file: ...", "empty file (0 bytes)",
# "... outside 0..65535; only 8 and 16 bit are read".
_CLAUSE_END = re.compile(r": | \(|; ")
_EXCEPTION = re.compile(r"[A-Z][A-Za-z0-9_.]*(?:Error|Exception|Warning|Interrupt|Exit)\b")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_SIZE = re.compile(r"\b\d+x\d+\b")
_NUMBER = re.compile(r"(?<!\w)\d+(?:\.\d+)?")
QUANTILES = {"median": 50, "p5": 5, "p95": 95}


def reject_reason(error: str) -> str:
    """The class of a reject's error: its first clause (with the exception type when the error names one
    next), quoted names and numbers replaced, so that records rejected for the same reason share it.

    "cannot decode: OSError: image file is truncated (3 bytes not processed)" -> "cannot decode: OSError";
    "image is 96x80, expected 64x64 (set input.resize to resize)" -> "image is NxN, expected NxN";
    "record 'b.png', which this edit pairs it with, was rejected: ..." -> "record '...', which this edit
    pairs it with, was rejected".
    """
    text = " ".join(redact_text(error).split())
    end = _CLAUSE_END.search(text)
    clause = text[: end.start()] if end else text
    if end and end.group() == ": ":
        named = _EXCEPTION.match(text, end.end())
        if named:
            clause += f": {named.group()}"
    clause = _NUMBER.sub("N", _SIZE.sub("NxN", _QUOTED.sub("'...'", clause))).strip()
    if len(clause) > MAX_REASON_CHARS:
        clause = clause[: MAX_REASON_CHARS - 3] + "..."
    return clause or "(no reason given)"


def count_reasons(errors: Iterable[str]) -> dict[str, int]:
    """Rejects by reason class, most frequent first (ties by reason)."""
    counts: dict[str, int] = {}
    for error in errors:
        reason = reject_reason(error)
        counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def shard_totals(rejects: list[Reject], metrics: dict[str, list[float]]) -> dict[str, Any]:
    """The fields of a shard's stats that its totals add up from: rejects by reason, per-row metric values
    (a value that is not finite as null, which every JSON reader takes)."""
    fields: dict[str, Any] = {"reject_reasons": count_reasons(error for _, _, error in rejects)}
    if metrics:
        fields["metrics"] = {
            name: [v if math.isfinite(v) else None for v in values] for name, values in metrics.items()
        }
    return fields


def reasons_total(stats: list[ShardStats], read_rejects: Callable[[str], list[Reject]]) -> dict[str, int]:
    """Rejects by reason over ``stats``; a shard committed before stats counted them has its rejects file
    read (``read_rejects``, by shard name)."""
    errors: dict[str, int] = {}
    for shard in stats:
        counts = shard.reject_reasons
        if counts is None:
            counts = count_reasons(error for _, _, error in read_rejects(shard.shard)) if shard.rejected else {}
        for reason, count in counts.items():
            errors[reason] = errors.get(reason, 0) + count
    return dict(sorted(errors.items(), key=lambda item: (-item[1], item[0])))


def metric_summary(values: np.ndarray) -> dict[str, float | int]:
    """count, mean, std (population), median, p5 and p95 of one metric's values (numpy's definitions)."""
    summary: dict[str, float | int] = {"count": int(len(values))}
    if len(values):
        summary["mean"] = float(np.mean(values))
        summary["std"] = float(np.std(values))
        summary.update({name: float(np.percentile(values, q)) for name, q in QUANTILES.items()})
    return summary


def metrics_total(stats: list[ShardStats]) -> dict[str, dict[str, float | int]]:
    """Each metric's summary over the rows of every shard of ``stats`` that recorded it, by metric name.
    Values that are not finite (the PSNR of an exact reconstruction is infinite; stats hold them as null)
    are left out of the statistics and counted apart as ``not_finite``."""
    values: dict[str, list[float]] = {}
    for shard in stats:
        for name, shard_values in (shard.metrics or {}).items():
            values.setdefault(name, []).extend(shard_values)
    totals = {}
    for name, listed in sorted(values.items()):
        array = np.asarray(listed, dtype=np.float64)
        finite = np.isfinite(array)
        totals[name] = metric_summary(array[finite])
        if not finite.all():
            totals[name]["not_finite"] = int((~finite).sum())
    return totals
