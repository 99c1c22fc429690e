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
    gate: bool = False  # build the engine through the accuracy gate (the first actor of a run)

    def __call__(self) -> Engine:
        if self.device == "cpu":
            torch.set_num_threads(max(1, self.threads))
        return build_engine(
            self.checkpoint, self.engine, self.stages, self.device, self.storage_options, gate=self.gate
        )


def build_gated(factory: InverterFactory) -> tuple[Engine | None, PreparedEngine]:
    """Build the engine and put it through the gate: the engine and the options that passed with the
    verdict, or no engine and why none passed."""
    try:
        engine = dataclasses.replace(factory, gate=True)()
    except AccuracyGateFailed as e:
        return None, PreparedEngine(error=str(e))
    except Exception as e:  # a missing package, an export or TensorRT build failure: reported, not a traceback
        return None, PreparedEngine(error=f"could not build the {factory.engine.name} engine: {type(e).__name__}: {e}")
    return engine, PreparedEngine(engine.options, engine.gate_report.describe() if engine.gate_report else None)


class InferenceActor:
    """Holds one engine for its whole life and runs a job's model step (``Work.model``) on payloads, or on
    one part of a payload (``Work.part``) when a shard is spread over several actors.

    The first actor of a run builds and gates the engine (``factory.gate``), filling the engine cache, while
    the first shards are read; the others start once it passed and load what it built."""

    def __init__(self, factory: InverterFactory, model: Callable[[Engine, Any, int], Any], part: Callable | None = None):
        if factory.gate:
            self.inverter, self.prepared = build_gated(factory)
        else:
            self.inverter, self.prepared = factory(), None
        self.model, self.part = model, part

    def engine(self) -> PreparedEngine | None:
        """What gating the engine gave, when this actor gated it."""
        return self.prepared

    def run(self, payload: Any, batch_size: int, part: tuple[int, int] | None = None) -> Any:
        if self.inverter is None:  # a restarted actor whose engine failed its gate this time
            raise RuntimeError(f"engine: {self.prepared.error}")
        if part is not None:
            payload = self.part(payload, *part, batch_size)
        return self.model(self.inverter, payload, batch_size)
