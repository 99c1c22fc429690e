"""What a run tells its user: the progress bar while it runs and the report at its end."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from pipeline.core.formats import input_format
from pipeline.core.job import Plan
from pipeline.core.payloads import ShardStats


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` and the noun in its number: "1 shard", "2 shards", "0 shards"."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


SHOWN_REASONS = 10  # reject reasons a summary lists; the manifest has them all


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
    first_commit_seconds: float | None = None  # from the start of the run (engine build included) to its first commit
    processed: int = 0  # records this run read (of its new shards, and the rejects it retried)
    reject_reasons: dict[str, int] = field(default_factory=dict)  # all rejects of the output, by reason class
    metrics: dict[str, dict[str, float | int]] = field(default_factory=dict)  # totals.metrics_total of the output

    def summary(self) -> str:
        lines = [
            f"{'succeeded' if self.succeeded else 'FAILED'}: {self.written} of {counted(self.records, 'record')} "
            f"{self.verb}, {self.rejected} rejected ({self.failure_rate:.2%}), {counted(self.shards, 'shard')} "
            f"({self.shards_skipped} already committed)",
            self._timing(),
        ]
        if self.retried:
            lines.append(f"retried {counted(self.retried, 'rejected record')}: {self.recovered} recovered, "
                         f"{self.retried - self.recovered} still rejected")
        if self.reject_reasons:
            lines += ["rejected by reason:", *self._reasons()]
        lines += [_metric_line(name, summary) for name, summary in self.metrics.items()]
        lines.append(f"output: {self.output}")
        if self.contact_sheet:
            lines.append(f"contact sheet: {self.contact_sheet}")
        if self.gone:
            lines.append(f"{counted(self.gone, 'committed shard')} read input that is no longer listed; "
                         f"{'its' if self.gone == 1 else 'their'} output is kept")
        if self.cluster:
            lines.append(f"ray: {self.cluster}")
        if self.message:
            lines.append(self.message)
        return "\n".join(lines)

    def _timing(self) -> str:
        """How long the run took and how fast it went over the records it read itself (already committed
        shards cost it nothing, so they do not count)."""
        if self.processed:
            rate = self.processed / self.seconds if self.seconds > 0 else 0.0
            line = (f"time {self.seconds:.1f} s, {counted(self.processed, 'record')} processed this run "
                    f"({rate:.1f} records/s)")
        else:
            line = f"time {self.seconds:.1f} s, no records to process this run"
        if self.first_commit_seconds:
            line += f", first shard committed after {self.first_commit_seconds:.1f} s"
        return line

    def _reasons(self) -> list[str]:
        ranked = sorted(self.reject_reasons.items(), key=lambda item: (-item[1], item[0]))
        width = len(str(ranked[0][1]))
        lines = [f"  {count:>{width}}  {reason}" for reason, count in ranked[:SHOWN_REASONS]]
        rest = ranked[SHOWN_REASONS:]
        if rest:
            lines.append(f"  {counted(sum(c for _, c in rest), 'more reject')} for "
                         f"{counted(len(rest), 'other reason')} (all in _manifest.json)")
        return lines


def _metric_line(name: str, summary: dict[str, float | int]) -> str:
    """"psnr over 30 images: mean 24.31, std 1.203, median 24.4, p5 22.1, p95 26" (4 significant digits)."""
    line = f"{name} over {counted(summary['count'], 'image')}"
    if summary["count"]:
        line += ": " + ", ".join(f"{stat} {summary[stat]:.4g}" for stat in ("mean", "std", "median", "p5", "p95"))
    if summary.get("not_finite"):
        line += f" ({counted(summary['not_finite'], 'value')} not finite, left out)"
    return line


class ProgressBar:
    """Records/s, shards done, failures and ETA in the driver's terminal."""

    def __init__(self, plan: Plan):
        from tqdm import tqdm

        # Records of webdataset and parquet shards are counted only as they are read.
        self.retrying = {s.name: plan.committed[s.name].rejected for s in plan.retries}
        total = None
        if plan.todo and input_format(plan.todo[0].format).records_listed:
            total = sum(len(s.records) for s in plan.todo) + sum(self.retrying.values())
        self.shards_total = len(plan.shards)
        self.shards_done = len(plan.committed) - len(self.retrying)
        self.rejected = 0
        self.bar = tqdm(total=total, unit="rec", file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
        self._refresh()

    def _refresh(self) -> None:
        self.bar.set_postfix_str(f"shards {self.shards_done}/{self.shards_total}, rejected {self.rejected}")

    def update_shard(self, stats: ShardStats) -> None:
        self.shards_done += 1
        self.rejected += stats.rejected
        self._refresh()
        self.bar.update(self.retrying.get(stats.shard, stats.records))

    def close(self) -> None:
        self.bar.close()
