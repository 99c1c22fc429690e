"""Invert the bundled sample faces with a tiny seeded E2Style model, through the public Python API.

    python -m jobs.invert_sample [--output outputs/sample]

Writes the model it uses (official checkpoint format), the final W+ codes of every image
(``latents.npy``, one row per line of ``image_list.txt``), each stage's codes (``latents_stage{k}.npy``)
and the reconstructions as PNG. The model is untrained (seeded random weights): this checks the whole
path from image files to codes, not the quality of the reconstructions.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engines import load_inverter, official_checkpoint, write_checkpoint
from operators.e2style import E2Style
from operators.images import images_to_tensor, tensor_to_images
from operators.presets import get_preset

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_IMAGES = ROOT / "samples" / "faces"
SAMPLE_PRESET = "tiny-64"
SAMPLE_STAGES = 2
SAMPLE_SEED = 0


def sample_checkpoint(path: Path) -> Path:
    """Write the seeded tiny 2-stage model in the official file format, once."""
    if path.exists():
        return path
    torch.manual_seed(SAMPLE_SEED)
    model = E2Style(dataclasses.replace(get_preset(SAMPLE_PRESET), stages=SAMPLE_STAGES)).eval()
    with torch.no_grad():
        mean_w = model.decoder.mean_latent(4096, generator=torch.Generator().manual_seed(SAMPLE_SEED))
        model.latent_avg.copy_(mean_w.expand_as(model.latent_avg))
    write_checkpoint(official_checkpoint(model), str(path))
    return path


def load_rgb(path: Path, size: int) -> np.ndarray:
    """An image file as uint8 RGB [size, size, 3], resized bilinearly like the official transform."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "outputs" / "sample", help="output folder")
    args = parser.parse_args(argv)
    out: Path = args.output
    (out / "reconstructions").mkdir(parents=True, exist_ok=True)

    checkpoint = sample_checkpoint(out / f"e2style-{SAMPLE_PRESET}-stage{SAMPLE_STAGES}.pt")
    inverter = load_inverter(str(checkpoint), stages=SAMPLE_STAGES, device="cpu")
    paths = sorted(SAMPLE_IMAGES.glob("*.png"))
    if not paths:
        print(f"no sample images in {SAMPLE_IMAGES}", file=sys.stderr)
        return 1
    size = inverter.config.image_size
    batch = images_to_tensor(np.stack([load_rgb(p, size) for p in paths]))
    per_stage = inverter.invert(batch, all_stages=True)
    recon = tensor_to_images(inverter.synthesize(per_stage[-1]))

    np.save(out / "latents.npy", per_stage[-1].cpu().numpy())
    for k, codes in enumerate(per_stage, start=1):
        np.save(out / f"latents_stage{k}.npy", codes.cpu().numpy())
    (out / "image_list.txt").write_text("".join(f"{p.relative_to(ROOT)}\n" for p in paths))
    for p, image in zip(paths, recon):
        Image.fromarray(image.numpy()).save(out / "reconstructions" / p.name)

    shape = "x".join(map(str, per_stage[-1].shape))
    print(f"inverted {len(paths)} images with {checkpoint.name} ({inverter.stages} stages, preset {inverter.info.preset})")
    for k in range(1, len(per_stage)):
        step = (per_stage[k] - per_stage[k - 1]).abs().mean().item()
        print(f"  stage {k + 1} moved the codes by {step:.4f} on average")
    print(f"W+ codes [{shape}]: {out / 'latents.npy'}")
    print(f"reconstructions:   {out / 'reconstructions'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
