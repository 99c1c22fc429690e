"""The public inference API: ``load_inverter`` and ``load_generator`` (eager PyTorch, float32)."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

import torch

from engines.checkpoints import CheckpointInfo, load_e2style, load_stylegan2
from operators.e2style import E2Style, E2StyleConfig
from operators.images import box_downsample
from operators.stylegan2 import Generator, GeneratorConfig


def resolve_device(device: str | torch.device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(device)!r} was asked for, but this PyTorch sees no CUDA GPU")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


@contextlib.contextmanager
def ieee_float32(device: torch.device) -> Iterator[None]:
    """Run CUDA convolutions and matmuls in true float32, not TF32 (which cuDNN allows by default)."""
    if device.type != "cuda":
        yield
        return
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    saved = conv.fp32_precision, matmul.fp32_precision
    conv.fp32_precision, matmul.fp32_precision = "ieee", "ieee"
    try:
        yield
    finally:
        conv.fp32_precision, matmul.fp32_precision = saved


def _check_batch(x: Any, channels: int, size: int, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{what} must be a floating-point torch.Tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim != 4 or tuple(x.shape[1:]) != (channels, size, size):
        raise ValueError(f"{what} must be [B, {channels}, {size}, {size}], got {list(x.shape)}")
    return x


class Inverter:
    """An E2Style model on one device. Inputs and outputs are float32; outputs stay on that device."""

    def __init__(self, model: E2Style, device: torch.device, info: CheckpointInfo):
        self.model = model.to(device).eval()
        self.device = device
        self.info = info

    @property
    def config(self) -> E2StyleConfig:
        return self.model.config

    @property
    def stages(self) -> int:
        return self.model.config.stages

    def invert(self, images: torch.Tensor, all_stages: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """Images [B, C, S, S] (RGB in [-1, 1] for the official models) -> W+ [B, num_ws, style_dim].

        With ``all_stages`` the codes after every stage, first to last, as a list.
        """
        cfg = self.model.config
        x = _check_batch(images, cfg.input_channels, cfg.image_size, "images")
        with torch.inference_mode(), ieee_float32(self.device):
            per_stage = self.model.invert(x.to(self.device, torch.float32))
        return per_stage if all_stages else per_stage[-1]

    def synthesize(self, codes: torch.Tensor) -> torch.Tensor:
        """W+ [B, num_ws, style_dim] -> the raw generator output pooled to [B, 3, S, S], not clamped."""
        ws = _check_codes(codes, self.model.config.generator)
        with torch.inference_mode(), ieee_float32(self.device):
            return self.model.synthesize(ws.to(self.device, torch.float32))


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
        ws = _check_codes(codes, self.generator.config)
        with torch.inference_mode(), ieee_float32(self.device):
            image = self.generator(ws.to(self.device, torch.float32), noise_mode="stored")
            return image if size is None else box_downsample(image, size)


def _check_codes(codes: Any, cfg: GeneratorConfig) -> torch.Tensor:
    if not isinstance(codes, torch.Tensor) or codes.ndim != 3 or tuple(codes.shape[1:]) != (cfg.num_ws, cfg.style_dim):
        got = list(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
        raise ValueError(f"codes must be W+ [B, {cfg.num_ws}, {cfg.style_dim}], got {got}")
    return codes


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
