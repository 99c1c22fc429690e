"""Latent direction files for editing (InterFaceGAN-style): a .npy or .pt file holding one direction."""

from __future__ import annotations

import io
from typing import Any, Mapping

import fsspec
import numpy as np
import torch


class DirectionError(ValueError):
    """A direction file that cannot be used; the message names the file."""


def load_direction(uri: str, num_ws: int, style_dim: int, storage_options: Mapping[str, Any] | None = None) -> np.ndarray:
    """float32 [style_dim] or [num_ws, style_dim] from a .npy (no pickles) or .pt file (tensors only).

    A .pt file holds a tensor, or a dict with exactly one tensor. The official files are (18, 512) float64
    with identical rows; a [1, style_dim] array is taken as [style_dim].
    """
    try:
        with fsspec.open(uri, "rb", **dict(storage_options or {})) as f:
            data = f.read()
    except FileNotFoundError:
        raise DirectionError(f"direction file {uri} does not exist") from None
    try:
        if uri.lower().endswith(".npy"):
            value = np.load(io.BytesIO(data), allow_pickle=False)
        elif uri.lower().endswith((".pt", ".pth")):
            value = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            if isinstance(value, Mapping):
                tensors = [v for v in value.values() if isinstance(v, torch.Tensor)]
                if len(tensors) != 1:
                    raise DirectionError(f"direction file {uri} holds a dict with {len(tensors)} tensors; expected one")
                value = tensors[0]
            if not isinstance(value, torch.Tensor):
                raise DirectionError(f"direction file {uri} holds {type(value).__name__}, expected a tensor")
            value = value.detach().float().numpy()
        else:
            raise DirectionError(f"direction file {uri}: expected a .npy or .pt file")
    except DirectionError:
        raise
    except Exception as e:  # numpy and torch raise many types for damaged files
        raise DirectionError(f"direction file {uri} cannot be read: {type(e).__name__}: {e}") from None
    array = np.asarray(value)
    if array.shape == (1, style_dim):
        array = array[0]
    if array.shape not in ((style_dim,), (num_ws, style_dim)):
        raise DirectionError(
            f"direction file {uri} has shape {list(array.shape)}; this generator needs [{style_dim}] or "
            f"[{num_ws}, {style_dim}]"
        )
    if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
        raise DirectionError(f"direction file {uri} must hold finite floating-point values ({array.dtype})")
    return array.astype(np.float32)
