"""Edits in W+ space: linear directions, style mixing, interpolation, and the paste of semantic face swap."""

from __future__ import annotations

from typing import Sequence

import torch


def _layer_mask(num_ws: int, layers: Sequence[int]) -> torch.Tensor:
    mask = torch.zeros(num_ws, dtype=torch.bool)
    for layer in layers:
        if not 0 <= layer < num_ws:
            raise ValueError(f"W+ layer {layer} out of range 0..{num_ws - 1}")
        mask[layer] = True
    return mask


def direction_layers(num_ws: int) -> range:
    """The W+ layers a direction moves when none are named: the official edits move the coarse layers 0-7."""
    return range(min(8, num_ws))


def apply_direction(codes: torch.Tensor, direction: torch.Tensor, strength: float, layers: Sequence[int]) -> torch.Tensor:
    """codes [B, num_ws, D] moved by ``strength`` x ``direction`` ([D] or [num_ws, D]) on ``layers`` only
    (the official edits use layers 0-7)."""
    num_ws, dim = codes.shape[1:]
    if direction.shape not in ((dim,), (num_ws, dim)):
        raise ValueError(f"a direction must be [{dim}] or [{num_ws}, {dim}], got {list(direction.shape)}")
    step = strength * direction.to(codes.dtype).expand(num_ws, dim)
    mask = _layer_mask(num_ws, layers).to(codes.device)[:, None]
    return codes + torch.where(mask, step.to(codes.device), torch.zeros_like(step, device=codes.device))


def mix_styles(content: torch.Tensor, style: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
    """content's codes with ``layers`` taken from style's (the official default takes 10-17 from the style)."""
    if content.shape != style.shape:
        raise ValueError(f"content {list(content.shape)} and style {list(style.shape)} codes differ in shape")
    mask = _layer_mask(content.shape[1], layers).to(content.device)[None, :, None]
    return torch.where(mask, style, content)


def interpolate(start: torch.Tensor, end: torch.Tensor, steps: int) -> torch.Tensor:
    """[steps + 2, ...]: start, ``steps`` evenly spaced codes between, end (linear in W+)."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    t = torch.linspace(0, 1, steps + 2, dtype=start.dtype, device=start.device).view(-1, *([1] * start.ndim))
    points = start + t * (end - start)
    points[0], points[-1] = start, end  # exactly the endpoints, not start + 1 * (end - start)
    return points


def paste_center(source: torch.Tensor, target: torch.Tensor, fraction: float = 0.5) -> torch.Tensor:
    """The target with the central ``fraction`` x ``fraction`` box of the source pasted in at the same place
    (step 1 of the paper's semantic face swap; inverting and regenerating the result is step 2)."""
    if source.shape != target.shape:
        raise ValueError(f"source {list(source.shape)} and target {list(target.shape)} differ in shape")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    height, width = source.shape[-2:]
    box_h, box_w = round(height * fraction), round(width * fraction)
    top, left = (height - box_h) // 2, (width - box_w) // 2
    pasted = target.clone()
    pasted[..., top : top + box_h, left : left + box_w] = source[..., top : top + box_h, left : left + box_w]
    return pasted
