"""Multi-stage E2Style inversion: a first-stage encoder, residual refinement stages, a StyleGAN2 decoder.

    W_1 = E_1(x) + latent_avg
    W_t = W_{t-1} + E_t(cat(x, pool(G(W_{t-1}))))        t > 1

``pool(G(W))`` is the generator's raw (unclamped) output average-pooled to the encoder's input size, and
``latent_avg`` is added once, in stage 1. The state_dict is the official one (``encoder_firststage.*``,
``encoder_refinestage_list.{i}.*``, ``decoder.*``) plus ``latent_avg``, which the official files keep
beside the state_dict.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from operators.e2style.encoder import E2StyleEncoder, EncoderConfig
from operators.images import box_downsample
from operators.stylegan2 import Generator, GeneratorConfig, NoiseMode

REFINE_IN_CHANNELS = 6  # the RGB input image and the previous stage's RGB reconstruction


@dataclass(frozen=True)
class E2StyleConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    stages: int = 1  # first stage plus stages - 1 residual refinement stages
    input_channels: int = 3  # first-stage input: 3 RGB in [-1, 1], 1 sketch in [0, 1], 19 one-hot labels
    image_size: int = 256  # side of encoder inputs and of reconstructions (generator output pooled to it)
    start_from_latent_avg: bool = True  # stage 1 predicts offsets from the mean W+ code

    def __post_init__(self):
        if self.stages < 1:
            raise ValueError(f"E2StyleConfig.stages must be >= 1, got {self.stages}")
        if self.input_channels < 1:
            raise ValueError(f"E2StyleConfig.input_channels must be >= 1, got {self.input_channels}")
        if self.stages > 1 and self.input_channels != 3:
            raise ValueError(
                f"refinement stages take an RGB image and an RGB reconstruction (6 channels), so a "
                f"{self.input_channels}-channel model can only have 1 stage, got stages={self.stages}"
            )
        enc, gen = self.encoder, self.generator
        if enc.num_ws != gen.num_ws or enc.style_dim != gen.style_dim:
            raise ValueError(
                f"encoder predicts {enc.num_ws} codes of width {enc.style_dim}, but a {gen.resolution} px "
                f"generator takes {gen.num_ws} codes of width {gen.style_dim}"
            )
        if self.image_size < 1 or gen.resolution % self.image_size:
            raise ValueError(
                f"E2StyleConfig.image_size ({self.image_size}) must divide the generator resolution "
                f"({gen.resolution})"
            )

    @property
    def num_ws(self) -> int:
        return self.generator.num_ws

    @property
    def style_dim(self) -> int:
        return self.generator.style_dim


class E2Style(nn.Module):
    def __init__(self, config: E2StyleConfig):
        super().__init__()
        self.config = config
        self.encoder_firststage = E2StyleEncoder(config.encoder, config.input_channels)
        self.encoder_refinestage_list = nn.ModuleList(
            E2StyleEncoder(config.encoder, REFINE_IN_CHANNELS) for _ in range(config.stages - 1)
        )
        self.decoder = Generator(config.generator)
        if config.start_from_latent_avg:
            self.register_buffer("latent_avg", torch.zeros(config.num_ws, config.style_dim))
        else:
            self.latent_avg = None

    def synthesize(
        self, ws: torch.Tensor, noise_mode: NoiseMode = "stored", generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """W+ [B, num_ws, style_dim] -> raw reconstruction [B, 3, image_size, image_size], not clamped."""
        return box_downsample(self.decoder(ws, noise_mode=noise_mode, generator=generator), self.config.image_size)

    def invert(
        self,
        x: torch.Tensor,
        stages: int | None = None,
        noise_mode: NoiseMode = "stored",
        generator: torch.Generator | None = None,
    ) -> list[torch.Tensor]:
        """Image [B, input_channels, S, S] -> the W+ codes [B, num_ws, style_dim] of every stage run.

        ``stages`` (default: all) limits the depth. Stage t > 1 renders stage t - 1's codes once, with
        ``noise_mode`` (inference uses the stored noise maps), so t stages cost t - 1 generator passes.
        """
        stages = self.config.stages if stages is None else stages
        if not 1 <= stages <= self.config.stages:
            raise ValueError(f"this model has {self.config.stages} stage(s), asked for {stages}")
        size = self.config.image_size
        expected = (self.config.input_channels, size, size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"images must be [B, {expected[0]}, {size}, {size}], got {tuple(x.shape)}")
        codes = self.encoder_firststage(x)
        if self.latent_avg is not None:
            codes = codes + self.latent_avg
        per_stage = [codes]
        for encoder in self.encoder_refinestage_list[: stages - 1]:
            previous = self.synthesize(codes, noise_mode=noise_mode, generator=generator)
            codes = codes + encoder(torch.cat((x, previous), dim=1))
            per_stage.append(codes)
        return per_stage
