"""What inference actors do with an engine, shared by the jobs' model steps: images to W+ codes and W+ codes
to images, in batches, numpy in and out (what crosses Ray's object store)."""

from __future__ import annotations

import numpy as np
import torch

from engines.engine import Engine
from operators.images import images_to_tensor, tensor_to_images


def invert_images(engine: Engine, images: np.ndarray, batch_size: int) -> np.ndarray:
    """uint8 RGB [N, S, S, 3] -> W+ float32 [N, num_ws, style_dim], in batches of ``batch_size``.

    On a GPU each batch crosses as uint8 (a quarter of float32's bytes) from pinned memory on a side
    stream, so the next batch's copy runs while the model works on this one; it becomes float on the GPU,
    and its codes come back into pinned memory without blocking: the host waits once, at the end.
    """
    cfg, device = engine.config, engine.device
    cuda = device.type == "cuda"
    out = torch.empty((len(images), cfg.num_ws, cfg.style_dim), dtype=torch.float32, pin_memory=cuda)
    starts = range(0, len(images), batch_size)
    if not cuda:
        for start in starts:
            batch = images_to_tensor(torch.as_tensor(images[start : start + batch_size]))
            out[start : start + len(batch)] = engine.invert(batch)
        return out.numpy()

    copies, compute = torch.cuda.Stream(device), torch.cuda.current_stream(device)

    def upload(start: int) -> torch.Tensor:
        host = torch.as_tensor(images[start : start + batch_size]).pin_memory()
        with torch.cuda.stream(copies):
            return host.to(device, non_blocking=True)

    ahead = upload(0) if len(images) else None
    for start in starts:
        batch = ahead
        compute.wait_stream(copies)
        batch.record_stream(compute)  # made on the copy stream, used on this one
        codes = engine.invert(images_to_tensor(batch))
        if start + batch_size < len(images):
            ahead = upload(start + batch_size)
        # The codes leave on the model's own stream: a CUDA-graph engine reuses its output memory next call.
        out[start : start + len(batch)].copy_(codes, non_blocking=True)
    torch.cuda.synchronize(device)
    return out.numpy()


def render(engine: Engine, codes: np.ndarray, batch_size: int) -> np.ndarray:
    """W+ [N, num_ws, style_dim] -> uint8 RGB [N, S, S, 3] at the model's size, as the official tensor2im."""
    size = engine.config.image_size
    out = np.empty((len(codes), size, size, 3), np.uint8)
    for start in range(0, len(codes), batch_size):
        batch = torch.as_tensor(codes[start : start + batch_size])
        out[start : start + len(batch)] = tensor_to_images(engine.synthesize(batch)).numpy()
    return out


def invert_tensors(engine: Engine, inputs: np.ndarray, batch_size: int) -> np.ndarray:
    """Model-ready float input [N, C, S, S] (sketches, one-hot label maps) -> W+ float32."""
    cfg = engine.config
    out = np.empty((len(inputs), cfg.num_ws, cfg.style_dim), np.float32)
    for start in range(0, len(inputs), batch_size):
        batch = torch.as_tensor(inputs[start : start + batch_size])
        out[start : start + len(batch)] = engine.invert(batch).cpu().numpy()
    return out


def images_to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float64 [N, 3, H, W] in [0, 1], where the metrics are computed."""
    return torch.as_tensor(images).permute(0, 3, 1, 2).double() / 255
