"""FIR filtering for StyleGAN2 in plain PyTorch: upsample, pad, filter, downsample.

These replace the CUDA ``upfirdn2d`` extension of the research code, so the generator imports and runs
anywhere and exports to ONNX. Every op here works on any batch size without baking it into the graph.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def make_fir_kernel(taps: Sequence[float], gain: float = 1.0) -> torch.Tensor:
    """Separable 2-D kernel from 1-D taps, normalised to sum to ``gain``.  # [K, K]

    ``gain = factor ** 2`` keeps the mean intensity when the filter follows an ``factor``-times
    zero-insertion upsample, which spreads each input pixel over ``factor ** 2`` outputs.
    """
    k = torch.as_tensor(taps, dtype=torch.float32)
    if k.ndim != 1:
        raise ValueError(f"FIR taps must be 1-D, got shape {tuple(k.shape)}")
    k2d = k[None, :] * k[:, None]
    return k2d / k2d.sum() * gain


def upfirdn2d(
    x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """Zero-insertion upsample by ``up``, pad, true 2-D convolution with ``kernel``, keep every ``down``-th.

    x: [B, C, H, W]; kernel: [K, K]; pad: (before, after) applied to both axes, negative values crop.
    Each channel is filtered on its own. Returns
    [B, C, (H*up + p0 + p1 - K) // down + 1, (W*up + p0 + p1 - K) // down + 1].
    """
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects [B, C, H, W], got shape {tuple(x.shape)}")
    _, channels, height, width = x.shape
    p0, p1 = pad
    out = x
    if up > 1:
        out = out.reshape(-1, channels, height, 1, width, 1)
        out = F.pad(out, [0, up - 1, 0, 0, 0, up - 1])
        out = out.reshape(-1, channels, height * up, width * up)
    out = F.pad(out, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    if p0 < 0 or p1 < 0:
        h, w = out.shape[-2:]
        out = out[:, :, max(-p0, 0) : h - max(-p1, 0), max(-p0, 0) : w - max(-p1, 0)]
    # conv2d is a correlation; flipping the kernel makes it the convolution the definition asks for.
    # A depthwise convolution filters each channel on its own (several times faster on CPU than
    # folding the channels into the batch of a single-channel convolution).
    weight = torch.flip(kernel, [0, 1]).to(out.dtype)
    weight = weight[None, None].expand(channels, 1, kernel.shape[0], kernel.shape[1])
    out = F.conv2d(out, weight, groups=channels)
    if down > 1:
        out = out[:, :, ::down, ::down]
    return out


class Upsample(torch.nn.Module):
    """2x FIR upsampling of the ToRGB skip path. Its ``kernel`` buffer is stored in the checkpoints."""

    def __init__(self, taps: Sequence[float], factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_fir_kernel(taps, gain=factor**2))
        p = len(taps) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, C, 2H, 2W]
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class Blur(torch.nn.Module):
    """FIR low-pass applied after a strided transposed convolution. ``kernel`` is a stored buffer."""

    def __init__(self, taps: Sequence[float], pad: tuple[int, int], gain: float = 1.0):
        super().__init__()
        self.register_buffer("kernel", make_fir_kernel(taps, gain=gain))
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)
