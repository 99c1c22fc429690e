"""Seeded models and official-format files for the tests."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch

from engines import official_checkpoint
from operators.e2style import E2Style
from operators.presets import get_preset

# Every key, shape and dtype of a released stage-2 E2Style checkpoint, as listed from the official file.
REFERENCE_DIR = Path(__file__).resolve().parent / "data"
TINY = "tiny-64"
TINY_BLOCK_STARTS = (0, 1, 2, 4, 5)  # first unit of each block of the tiny preset's 1-1-2-1 body
OFFICIAL_BLOCK_STARTS = (0, 3, 7, 21, 24)


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every parameter and statistic a seeded, well-scaled, non-trivial value.

    Default init leaves biases, noise strengths and BN statistics at 0/1, which would hide mix-ups of
    those tensors; FIR kernels and stored noise maps keep their values.
    """
    gen = torch.Generator().manual_seed(seed)
    for name, t in module.state_dict().items():
        if not t.is_floating_point() or name.endswith("kernel") or ".noises." in f".{name}":
            continue
        r = torch.randn(t.shape, generator=gen)
        if name.endswith("running_var"):
            t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
        elif name.endswith("running_mean") or name.endswith("bias") or name.endswith("noise.weight"):
            t.copy_(0.1 * r)
        elif t.ndim == 1:  # BN and PReLU weights
            t.copy_(1.0 + 0.1 * r if "res_layer.2" not in name and "input_layer.2" not in name else 0.25 + 0.05 * r)
        elif name.endswith("latent_avg"):  # one mean w repeated over the W+ slots, as in the released files
            t.copy_(r[0].expand_as(t))
        elif ".conv.weight" in name or name.endswith("input.input") or name.startswith("style.") or ".style." in name:
            t.copy_(r)  # equalised-lr weights are stored at unit scale
        else:
            fan_in = math.prod(t.shape[1:])
            t.copy_(r / math.sqrt(fan_in))
    return module


def make_e2style(preset: str = TINY, stages: int = 1, input_channels: int = 3, seed: int = 0) -> E2Style:
    config = dataclasses.replace(get_preset(preset), stages=stages, input_channels=input_channels)
    torch.manual_seed(seed)
    return randomize_(E2Style(config), seed).eval()


def write_official(model: E2Style, path: Path, **opts) -> Path:
    torch.save(official_checkpoint(model, **opts), path)
    return path


def images(batch: int, channels: int, size: int, seed: int) -> torch.Tensor:
    """Seeded float32 images in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, size, size, generator=gen) * 2 - 1
