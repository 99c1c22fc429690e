"""Evaluate an E2Style checkpoint on your own images, stage by stage, and write a report.

PSNR, SSIM, MS-SSIM, L2, LPIPS, identity similarity and FID of each stage's reconstructions, run time and
parameters, optionally for other engine precisions too: per-record scores in a Parquet file per input
shard, and _report.md, _report.json, _report.png and _best_worst.png once every shard is committed.

    python -m jobs.evaluate spec.yaml [--overwrite | --retry-rejects | --verify] [--no-progress]
"""

from __future__ import annotations

import sys

from jobs.cli import main as run_main
from pipeline.evaluate.job import EVALUATE


def main(argv: list[str] | None = None) -> int:
    return run_main(argv, "python -m jobs.evaluate", __doc__, EVALUATE)


if __name__ == "__main__":
    sys.exit(main())
