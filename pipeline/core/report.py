"""What a run tells its user: the progress bar while it runs and the report at its end."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from pipeline.core.formats import input_format
from pipeline.core.job import Plan
from pipeline.core.payloads import ShardStats


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

    def summary(self) -> str:
        rate = self.records / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"{'succeeded' if self.succeeded else 'FAILED'}: {self.written} of {self.records} records {self.verb}, "
            f"{self.rejected} rejected ({self.failure_rate:.2%}), {self.shards} shards "
            f"({self.shards_skipped} already committed)",
            f"time {self.seconds:.1f} s, {rate:.1f} records/s this run"
            + (f", first shard committed after {self.first_commit_seconds:.1f} s" if self.first_commit_seconds else ""),
            f"output: {self.output}",
        ]
        if self.retried:
            lines.insert(1, f"retried {self.retried} rejected records: {self.recovered} recovered, "
                            f"{self.retried - self.recovered} still rejected")
        if self.contact_sheet:
            lines.append(f"contact sheet: {self.contact_sheet}")
        if self.gone:
            lines.append(f"{self.gone} committed shard(s) read input that is no longer listed; their output is kept")
        if self.cluster:
            lines.append(f"ray: {self.cluster}")
        if self.message:
            lines.append(self.message)
        return "\n".join(lines)


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
