"""Restore degraded face images (colorization, denoising, inpainting, super-resolution) with a task's
E2Style checkpoint, or evaluate it on clean images (degrade, restore, PSNR/SSIM); images and a Parquet
manifest per input shard.

    python -m jobs.restore spec.yaml [--overwrite | --retry-rejects | --verify] [--no-progress]
"""

from __future__ import annotations

import sys

from jobs.cli import main as run_main
from pipeline.restore.job import RESTORE


def main(argv: list[str] | None = None) -> int:
    return run_main(argv, "python -m jobs.restore", __doc__, RESTORE)


if __name__ == "__main__":
    sys.exit(main())
