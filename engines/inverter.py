"""The public inference API: ``load_inverter`` and ``load_generator`` (eager PyTorch, float32)."""

from __future__ import annotations

from typing import Any, Mapping

import torch

from engines.checkpoints import CheckpointInfo, load_e2style, load_stylegan2
from engines.graphs import model_graphs
from engines.runners import GraphModel, check_codes, eager_runner, ieee_float32, resolve_device
from operators.e2style import E2Style, E2StyleConfig
from operators.images import box_downsample
from operators.stylegan2 import Generator, GeneratorConfig


class Inverter(GraphModel):
    """An E2Style model on one device as the research code runs it: eager float32 PyTorch on the model's
    own modules, in its generator's form and their layout: the reference that engines are held to."""

    def __init__(self, model: E2Style, device: torch.device, info: CheckpointInfo):
        self.model = model.to(device).eval()
        stages = model.config.stages  # load_e2style builds the stages asked for
        graphs = model_graphs(self.model, stages, exportable=False)
        super().__init__(model.config, stages, info, device, {name: eager_runner(g, device) for name, g in graphs})


class Synthesizer:
    """A StyleGAN2 generator on one device, rendering W+ codes with its stored noise maps."""

    def __init__(self, generator: Generator, latent_avg: torch.Tensor | None, device: torch.device, info: CheckpointInfo):
        self.generator = generator.to(device).eval()
        self.latent_avg = None if latent_avg is None else latent_avg.to(device)  # [num_ws, style_dim]
        self.device = device
        self.info = info

    @property
    def config(self) -> GeneratorConfig:
        return self.generator.config

    def synthesize(self, codes: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """W+ [B, num_ws, style_dim] -> raw image [B, 3, R, R], or box-pooled to ``size`` (dividing R)."""
        ws = check_codes(codes, self.generator.config)
        with torch.inference_mode(), ieee_float32(self.device):
            image = self.generator(ws.to(self.device, torch.float32), noise_mode="stored")
            return image if size is None else box_downsample(image, size)


def load_inverter(
    uri: str,
    stages: int | None = None,
    device: str | torch.device = "cpu",
    config: E2StyleConfig | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Inverter:
    """Load an official E2Style checkpoint from a path or fsspec URL (``s3://...``) for inference.

    stages: how many stages to run (default: all the file holds); more than it holds is an error.
    config: the architecture, when the file is not one of the registered presets.
    storage_options: fsspec options for the URL's filesystem (for example an S3 endpoint).
    """
    dev = resolve_device(device)
    model, info = load_e2style(uri, stages=stages, config=config, storage_options=storage_options)
    return Inverter(model, dev, info)


def load_generator(
    uri: str,
    device: str | torch.device = "cpu",
    config: GeneratorConfig | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Synthesizer:
    """Load a StyleGAN2 generator from a rosinality file (``g_ema``) or an E2Style file's decoder."""
    dev = resolve_device(device)
    generator, latent_avg, info = load_stylegan2(uri, config=config, storage_options=storage_options)
    return Synthesizer(generator, latent_avg, dev, info)
