"""Write the bundled sample's model: a tiny seeded 2-stage E2Style checkpoint in the official file format.

    python -m jobs.make_sample [--output outputs/sample/model/e2style-tiny-64-stage2.pt]

The model is untrained (seeded random weights), so the sample job checks the whole path from image
files to committed Parquet, not the quality of the codes. Running it again leaves an existing file alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from engines import official_checkpoint, write_checkpoint
from operators.e2style import E2Style
from operators.presets import get_preset

SAMPLE_PRESET = "tiny-64"
SAMPLE_STAGES = 2
SAMPLE_SEED = 0
DEFAULT_PATH = Path("outputs/sample/model/e2style-tiny-64-stage2.pt")


def sample_model() -> E2Style:
    torch.manual_seed(SAMPLE_SEED)
    model = E2Style(dataclasses.replace(get_preset(SAMPLE_PRESET), stages=SAMPLE_STAGES)).eval()
    with torch.no_grad():  # latent_avg is the mean mapped w, as for a real StyleGAN2
        mean_w = model.decoder.mean_latent(4096, generator=torch.Generator().manual_seed(SAMPLE_SEED))
        model.latent_avg.copy_(mean_w.expand_as(model.latent_avg))
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.make_sample", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_PATH, help="where to write the checkpoint")
    args = parser.parse_args(argv)
    if args.output.exists():
        print(f"sample model already at {args.output}")
        return 0
    write_checkpoint(official_checkpoint(sample_model()), str(args.output))
    print(f"wrote the sample model to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
