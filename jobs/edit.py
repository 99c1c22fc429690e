"""Edit faces in W+ space: latent directions, style mixing, interpolation and semantic face swap, on the
codes an inversion job wrote (joined by key) or on images inverted on the fly; images and a Parquet
manifest per input shard.

    python -m jobs.edit spec.yaml [--overwrite | --retry-rejects | --verify] [--no-progress]
"""

from __future__ import annotations

import sys

from jobs.cli import main as run_main
from pipeline.edit.job import EDIT


def main(argv: list[str] | None = None) -> int:
    return run_main(argv, "python -m jobs.edit", __doc__, EDIT)


if __name__ == "__main__":
    sys.exit(main())
