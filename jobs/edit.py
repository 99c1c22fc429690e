"""Edit faces in W+ space: latent directions, style mixing, interpolation and semantic face swap, on the
codes an inversion job wrote (joined by key) or on images inverted on the fly; images and a Parquet
manifest per input shard.

    python -m jobs.edit spec.yaml [--overwrite | --retry-rejects | --verify] [--no-progress]
"""

from __future__ import annotations

import sys

from jobs.cli import EXIT_CODES, main as run_main
from pipeline.edit.job import EDIT

__doc__ += "\n" + EXIT_CODES


def main(argv: list[str] | None = None) -> int:
    return run_main(argv, "python -m jobs.edit", __doc__.splitlines()[0], EDIT)


if __name__ == "__main__":
    sys.exit(main())
