"""The StyleGAN2 generator: mapping network z -> w and synthesis network W+ -> image.

The module tree reproduces rosinality's ``Generator`` (which the E2Style checkpoints embed under
``decoder.``) key for key, so its state_dict loads those files unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from operators.stylegan2.layers import (
    MODULATION_FORMS,
    ConstantInput,
    EqualLinear,
    ModulationForm,
    PixelNorm,
    StyledConv,
    ToRGB,
)

NoiseMode = Literal["stored", "random", "zero"]
NOISE_MODES: tuple[str, ...] = ("stored", "random", "zero")


@dataclass(frozen=True)
class GeneratorConfig:
    resolution: int = 1024  # output side in pixels: a power of two from 32 to 1024
    style_dim: int = 512  # width of z, w and every W+ code
    mapping_layers: int = 8  # depth of the z -> w MLP (unused when W+ is given, but stored)
    channel_multiplier: int = 2  # StyleGAN2 config-f is 2; scales channels from 64 px up
    # Channels at resolution r are min(channel_max, channel_base * channel_multiplier // r); the defaults
    # give rosinality's table {4..64: 512, 128: 256, 256: 128, 512: 64, 1024: 32} at multiplier 2.
    channel_base: int = 16384
    channel_max: int = 512
    mapping_lr_mul: float = 0.01  # equalised-lr multiplier of the mapping MLP, part of its weight scale
    blur_taps: tuple[int, ...] = (1, 3, 3, 1)  # FIR taps of every 2x upsampling
    # How modulated convolutions are computed (layers.MODULATION_FORMS); all give the same numbers to
    # float32 round-off. "grouped" is the research code's arithmetic and the faster one on CPU
    # (BENCHMARKS.md); "batched" is the one to export and to run on GPUs, as its graph does not depend
    # on the batch size; "folded" also folds the upsampling blur into the convolution.
    modulation: ModulationForm = "grouped"

    def __post_init__(self):
        log2 = math.log2(self.resolution) if self.resolution > 0 else -1
        if not (log2 == int(log2) and 32 <= self.resolution <= 1024):
            raise ValueError(f"GeneratorConfig.resolution must be a power of two in [32, 1024], got {self.resolution}")
        if self.modulation not in MODULATION_FORMS:
            raise ValueError(
                f"GeneratorConfig.modulation must be one of {', '.join(MODULATION_FORMS)}, got {self.modulation!r}"
            )
        for name in ("style_dim", "channel_multiplier", "channel_base", "channel_max"):
            if getattr(self, name) <= 0:
                raise ValueError(f"GeneratorConfig.{name} must be positive, got {getattr(self, name)}")
        if self.channels(self.resolution) < 1:
            raise ValueError(
                f"GeneratorConfig gives 0 channels at {self.resolution} px: raise channel_base "
                f"({self.channel_base}) or channel_multiplier ({self.channel_multiplier})"
            )
        if self.mapping_layers < 0:
            raise ValueError(f"GeneratorConfig.mapping_layers must be >= 0, got {self.mapping_layers}")

    @property
    def log2_resolution(self) -> int:
        return int(math.log2(self.resolution))

    @property
    def num_ws(self) -> int:
        """Number of W+ codes: two per resolution from 8 px up, plus conv1 and to_rgb1 at 4 px (18 at 1024)."""
        return 2 * self.log2_resolution - 2

    @property
    def num_noises(self) -> int:
        return 2 * self.log2_resolution - 3

    def channels(self, resolution: int) -> int:
        return min(self.channel_max, self.channel_base * self.channel_multiplier // resolution)

    def noise_resolution(self, index: int) -> int:
        """Side of noise map ``index``: 4, 8, 8, 16, 16, ..."""
        return 2 ** ((index + 5) // 2)


class Generator(nn.Module):
    """StyleGAN2 generator. Noise maps are buffers (``noises.noise_i``); inference uses them as stored."""

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config
        c, form, taps = config, config.modulation, config.blur_taps
        self.style = nn.Sequential(
            PixelNorm(),
            *[
                EqualLinear(c.style_dim, c.style_dim, lr_mul=c.mapping_lr_mul, activate=True)
                for _ in range(c.mapping_layers)
            ],
        )
        self.input = ConstantInput(c.channels(4))
        self.conv1 = StyledConv(c.channels(4), c.channels(4), c.style_dim, blur_taps=taps, form=form)
        self.to_rgb1 = ToRGB(c.channels(4), c.style_dim, upsample=False, blur_taps=taps, form=form)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_channels = c.channels(4)
        for log2_res in range(3, c.log2_resolution + 1):
            out_channels = c.channels(2**log2_res)
            self.convs.append(
                StyledConv(in_channels, out_channels, c.style_dim, upsample=True, blur_taps=taps, form=form)
            )
            self.convs.append(StyledConv(out_channels, out_channels, c.style_dim, blur_taps=taps, form=form))
            self.to_rgbs.append(ToRGB(out_channels, c.style_dim, blur_taps=taps, form=form))
            in_channels = out_channels
        self.noises = nn.Module()
        for i in range(c.num_noises):
            side = c.noise_resolution(i)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, side, side))

    def mapping(self, z: torch.Tensor) -> torch.Tensor:  # [B, style_dim] -> [B, style_dim]
        return self.style(z)

    @torch.no_grad()
    def mean_latent(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean of w over ``num_samples`` draws of z, the centre that W+ codes are predicted around.  # [D]"""
        device = self.input.input.device
        z = torch.randn(num_samples, self.config.style_dim, generator=generator, device=device)
        return self.mapping(z).mean(0)

    def noise_maps(
        self, batch: int, mode: NoiseMode, generator: torch.Generator | None = None
    ) -> list[torch.Tensor | None]:
        """The noise map of every layer for ``mode``: the stored buffers, fresh N(0, 1) draws, or none."""
        if mode == "stored":
            return [getattr(self.noises, f"noise_{i}") for i in range(self.config.num_noises)]
        if mode == "zero":
            return [None] * self.config.num_noises
        if mode == "random":
            device = self.input.input.device
            return [
                torch.randn(batch, 1, side, side, generator=generator, device=device)
                for side in map(self.config.noise_resolution, range(self.config.num_noises))
            ]
        raise ValueError(f"unknown noise mode {mode!r}; known: {', '.join(NOISE_MODES)}")

    def forward(
        self, ws: torch.Tensor, noise_mode: NoiseMode = "stored", generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Synthesis from W+. ws: [B, num_ws, style_dim] -> raw image [B, 3, R, R], neither clamped nor tanh'd.

        ``generator`` seeds the draws of ``noise_mode="random"`` (training); other modes draw nothing.
        """
        expected = (self.config.num_ws, self.config.style_dim)
        if ws.ndim != 3 or tuple(ws.shape[1:]) != expected:
            raise ValueError(f"W+ codes must have shape [B, {expected[0]}, {expected[1]}], got {tuple(ws.shape)}")
        noise = self.noise_maps(ws.shape[0], noise_mode, generator)
        out = self.conv1(self.input(ws), ws[:, 0], noise[0])
        skip = self.to_rgb1(out, ws[:, 1])
        for k, to_rgb in enumerate(self.to_rgbs):
            i = 1 + 2 * k
            out = self.convs[2 * k](out, ws[:, i], noise[i])
            out = self.convs[2 * k + 1](out, ws[:, i + 1], noise[i + 1])
            skip = to_rgb(out, ws[:, i + 2], skip)
        return skip
