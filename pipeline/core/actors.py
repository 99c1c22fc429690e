"""The inference actor: built once per worker from a factory, it turns decoded images into W+ codes."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from engines.engine import Engine, EngineOptions, build_engine
from engines.gate import AccuracyGateFailed
from operators.images import images_to_tensor


@dataclass(frozen=True)
class InverterFactory:
    """What an actor needs to build its model; cheap to ship to workers (no weights inside)."""

    checkpoint: str
    stages: int | None
    device: str  # "cpu" or "cuda"
    threads: int  # torch intra-op threads on CPU
    storage_options: dict[str, Any] = field(default_factory=dict)
    engine: EngineOptions = EngineOptions()
    gate: bool = False  # actors load an engine already gated by prepare_engine

    def __call__(self) -> Engine:
        if self.device == "cpu":
            torch.set_num_threads(max(1, self.threads))
        return build_engine(
            self.checkpoint, self.engine, self.stages, self.device, self.storage_options, gate=self.gate
        )


def prepare_engine(factory: InverterFactory) -> dict:
    """Build the engine once for the cluster (filling the engine cache) and put it through the gate.

    Returns {"options": the options that passed (after any fallback), "report": the gate's verdict} or
    {"error": why no engine passed}.
    """
    try:
        engine = dataclasses.replace(factory, gate=True)()
    except AccuracyGateFailed as e:
        return {"error": str(e)}
    except Exception as e:  # a missing package, an export or TensorRT build failure: reported, not a traceback
        return {"error": f"could not build the {factory.engine.name} engine: {type(e).__name__}: {e}"}
    report = engine.gate_report.describe() if engine.gate_report else None
    return {"options": engine.options, "report": report}


class InferenceActor:
    """Holds one engine for its whole life and runs a job's model step (``Work.model``) on payloads."""

    def __init__(self, factory: InverterFactory, model: Callable[[Engine, Any, int], Any]):
        self.inverter = factory()
        self.model = model

    def describe(self) -> dict:
        return {"pid": os.getpid(), "device": str(self.inverter.device), "stages": self.inverter.stages}

    def run(self, payload: Any, batch_size: int) -> Any:
        return self.model(self.inverter, payload, batch_size)


def invert_images(engine: Engine, images: np.ndarray, batch_size: int) -> np.ndarray:
    """uint8 RGB [N, S, S, 3] -> W+ float32 [N, num_ws, style_dim], in batches of ``batch_size``."""
    cfg = engine.config
    out = np.empty((len(images), cfg.num_ws, cfg.style_dim), np.float32)
    for start in range(0, len(images), batch_size):
        batch = images_to_tensor(images[start : start + batch_size])
        out[start : start + len(batch)] = engine.invert(batch).cpu().numpy()
    return out
