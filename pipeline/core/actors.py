"""The inference actor: built once per worker from a factory, it holds an engine and runs a job's model
step (``Work.model``) on prepared shards."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from engines.engine import Engine, EngineOptions, build_engine
from engines.gate import AccuracyGateFailed
from pipeline.core.payloads import PreparedEngine


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


def prepare_engine(factory: InverterFactory) -> PreparedEngine:
    """Build the engine once for the cluster (filling the engine cache) and put it through the gate."""
    try:
        engine = dataclasses.replace(factory, gate=True)()
    except AccuracyGateFailed as e:
        return PreparedEngine(error=str(e))
    except Exception as e:  # a missing package, an export or TensorRT build failure: reported, not a traceback
        return PreparedEngine(error=f"could not build the {factory.engine.name} engine: {type(e).__name__}: {e}")
    return PreparedEngine(engine.options, engine.gate_report.describe() if engine.gate_report else None)


class InferenceActor:
    """Holds one engine for its whole life and runs a job's model step (``Work.model``) on payloads."""

    def __init__(self, factory: InverterFactory, model: Callable[[Engine, Any, int], Any]):
        self.inverter = factory()
        self.model = model

    def run(self, payload: Any, batch_size: int) -> Any:
        return self.model(self.inverter, payload, batch_size)
