"""Translate sketches or segmentation label maps into faces with a task's E2Style checkpoint; images and
a Parquet manifest per input shard.

    python -m jobs.translate spec.yaml [--overwrite | --retry-rejects | --verify] [--no-progress]
"""

from __future__ import annotations

import sys

from jobs.cli import main as run_main
from pipeline.translate.job import TRANSLATE


def main(argv: list[str] | None = None) -> int:
    return run_main(argv, "python -m jobs.translate", __doc__, TRANSLATE)


if __name__ == "__main__":
    sys.exit(main())
