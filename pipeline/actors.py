"""The inference actor: built once per worker from a factory, it turns decoded images into W+ codes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from engines import Inverter, load_inverter
from operators.images import images_to_tensor


@dataclass(frozen=True)
class InverterFactory:
    """What an actor needs to build its model; cheap to ship to workers (no weights inside)."""

    checkpoint: str
    stages: int | None
    device: str  # "cpu" or "cuda"
    threads: int  # torch intra-op threads on CPU
    storage_options: dict[str, Any] = field(default_factory=dict)

    def __call__(self) -> Inverter:
        if self.device == "cpu":
            torch.set_num_threads(max(1, self.threads))
        return load_inverter(self.checkpoint, stages=self.stages, device=self.device, storage_options=self.storage_options)


class InferenceActor:
    def __init__(self, factory: InverterFactory):
        self.inverter = factory()

    def describe(self) -> dict:
        return {"pid": os.getpid(), "device": str(self.inverter.device), "stages": self.inverter.stages}

    def invert(self, images: np.ndarray, batch_size: int) -> np.ndarray:
        """uint8 RGB [N, S, S, 3] -> W+ float32 [N, num_ws, style_dim], in batches of ``batch_size``."""
        cfg = self.inverter.config
        out = np.empty((len(images), cfg.num_ws, cfg.style_dim), np.float32)
        for start in range(0, len(images), batch_size):
            batch = images_to_tensor(images[start : start + batch_size])
            out[start : start + len(batch)] = self.inverter.invert(batch).cpu().numpy()
        return out
