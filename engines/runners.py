"""An E2Style model run as its graphs (``engines.graphs``): a runner per graph, whatever the backend, and
the one multi-stage recurrence over them. ``GraphModel`` is the ``InversionModel`` that ``load_inverter``
and ``build_engine`` both return, over eager float32 runners of the model's own modules or a backend's.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping

import torch

from engines.checkpoints import CheckpointInfo
from operators.e2style import E2StyleConfig
from operators.stylegan2 import GeneratorConfig

Runner = Callable[..., torch.Tensor]  # the graph's inputs by name -> its output, float32 on the model's device


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


def eager_runner(
    module: torch.nn.Module,
    device: torch.device,
    dtype: torch.dtype | None = None,
    layout: torch.memory_format | None = None,
) -> Runner:
    """``module`` run by PyTorch, under autocast to ``dtype`` when given, its image inputs in ``layout``
    when given (left as they come otherwise, as the research code runs them)."""

    def run(**inputs: torch.Tensor) -> torch.Tensor:
        args = [t.contiguous(memory_format=layout) if layout and t.ndim == 4 else t for t in inputs.values()]
        autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with torch.inference_mode(), ieee_float32(device), autocast:
            return module(*args).float().contiguous()

    return run


def invert_stages(runners: Mapping[str, Runner], images: torch.Tensor, stages: int) -> list[torch.Tensor]:
    """The codes after each of ``stages`` stages, in the order of ``E2Style.invert``: the first stage, then
    for stage k the residual of its encoder given the images and the previous codes' reconstruction."""
    codes = runners["stage1"](images=images)
    per_stage = [codes]
    for k in range(2, stages + 1):
        reconstruction = runners["synthesis"](codes=codes)
        codes = codes + runners[f"stage{k}"](images=images, reconstruction=reconstruction)
        per_stage.append(codes)
    return per_stage


def check_images(images: Any, config: E2StyleConfig) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        got = getattr(images, "dtype", type(images).__name__)
        raise TypeError(f"images must be a floating-point torch.Tensor, got {got}")
    expected = (config.input_channels, config.image_size, config.image_size)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise ValueError(f"images must be [B, {', '.join(map(str, expected))}], got {list(images.shape)}")
    return images


def check_codes(codes: Any, cfg: GeneratorConfig) -> torch.Tensor:
    if not isinstance(codes, torch.Tensor) or codes.ndim != 3 or tuple(codes.shape[1:]) != (cfg.num_ws, cfg.style_dim):
        got = list(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
        raise ValueError(f"codes must be W+ [B, {cfg.num_ws}, {cfg.style_dim}], got {got}")
    return codes


class GraphModel:
    """An E2Style model as the runners of its graphs ("stage1" .. "stage<stages>", "synthesis") on one
    device: inputs of any floating dtype, run in float32; outputs float32 on that device."""

    max_batch: int | None = None  # larger batches run in pieces of this size; None: whole

    def __init__(
        self, config: E2StyleConfig, stages: int, info: CheckpointInfo, device: torch.device, runners: dict[str, Runner]
    ):
        self.config, self.stages, self.info, self.device = config, stages, info, device
        self.runners = runners

    def invert(self, images: torch.Tensor, all_stages: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """Images [B, C, S, S] (RGB in [-1, 1] for the official models) -> W+ [B, num_ws, style_dim].

        With ``all_stages`` the codes after every stage, first to last, as a list.
        """
        x = check_images(images, self.config).to(self.device, torch.float32)
        pieces = [invert_stages(self.runners, piece, self.stages) for piece in self._pieces(x)]
        per_stage = pieces[0] if len(pieces) == 1 else [torch.cat(stage) for stage in zip(*pieces)]
        return per_stage if all_stages else per_stage[-1]

    def synthesize(self, codes: torch.Tensor) -> torch.Tensor:
        """W+ [B, num_ws, style_dim] -> the raw generator output pooled to [B, 3, S, S], not clamped."""
        ws = check_codes(codes, self.config.generator).to(self.device, torch.float32)
        pieces = [self.runners["synthesis"](codes=piece) for piece in self._pieces(ws)]
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)

    def _pieces(self, x: torch.Tensor) -> list[torch.Tensor]:
        step = self.max_batch
        if step is None or len(x) <= step:
            return [x]
        return [x[i : i + step] for i in range(0, len(x), step)]
