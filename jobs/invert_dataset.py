"""Invert a dataset of face images into W+ codes, one Parquet file per input shard.

    python -m jobs.invert_dataset spec.yaml [--overwrite | --retry-rejects | --verify] [--no-progress]
    ray job submit --working-dir . -- python -m jobs.invert_dataset spec.yaml
"""

from __future__ import annotations

import sys

from jobs.cli import EXIT_BAD_SPEC, EXIT_FAILED, EXIT_OK, main as run_main
from pipeline.inversion.job import INVERSION

__all__ = ["EXIT_BAD_SPEC", "EXIT_FAILED", "EXIT_OK", "main"]


def main(argv: list[str] | None = None) -> int:
    return run_main(argv, "python -m jobs.invert_dataset", __doc__, INVERSION)


if __name__ == "__main__":
    sys.exit(main())
