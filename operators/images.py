"""Conversions between uint8 RGB images and model tensors, exactly as the official code does them.

In: ``ToTensor`` then ``Normalize(0.5, 0.5)``, i.e. x / 255 - 0.5, / 0.5 in float32.
Out: ``tensor2im``, i.e. (y + 1) / 2, clipped to [0, 1], times 255, truncated (not rounded) to uint8.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F


def images_to_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 RGB [B, H, W, 3] (or one [H, W, 3]) -> float32 [B, 3, H, W] in [-1, 1]."""
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8:
        raise TypeError(f"images must be uint8, got {x.dtype}")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images must be RGB [B, H, W, 3] or [H, W, 3], got {tuple(x.shape)}")
    return x.permute(0, 3, 1, 2).to(torch.float32).div(255).sub(0.5).div(0.5)


def tensor_to_images(tensor: torch.Tensor, rounding: Literal["truncate", "nearest"] = "truncate") -> torch.Tensor:
    """Model output [B, 3, H, W] in about [-1, 1] -> uint8 RGB [B, H, W, 3] on the CPU.

    ``truncate`` is the official ``tensor2im``. It loses 1 LSB on about a quarter of the values of a
    perfect round trip, since (x / 255 - 0.5) / 0.5 maps back to just below x; ``nearest`` round-trips.
    """
    if tensor.ndim != 4 or tensor.shape[1] != 3:
        raise ValueError(f"expected images [B, 3, H, W], got {tuple(tensor.shape)}")
    if rounding not in ("truncate", "nearest"):
        raise ValueError(f"rounding must be 'truncate' or 'nearest', got {rounding!r}")
    y = ((tensor.detach().to("cpu", torch.float32) + 1) / 2).clamp(0, 1).mul(255)
    if rounding == "nearest":
        y = y.round()
    # float -> uint8 conversion truncates toward zero, as numpy's astype('uint8') does in tensor2im.
    return y.to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def box_downsample(image: torch.Tensor, size: int) -> torch.Tensor:
    """[B, C, R, R] -> [B, C, size, size] by averaging size-aligned blocks (the official 1024 -> 256
    ``face_pool`` is a 4x4 box). ``size`` must divide R."""
    resolution = image.shape[-1]
    if size < 1 or resolution % size:
        raise ValueError(f"cannot box-downsample a {resolution} px image to {size} px: {size} must divide {resolution}")
    factor = resolution // size
    return image if factor == 1 else F.avg_pool2d(image, factor)
