"""The translation job's model step, in the inference actors."""

from __future__ import annotations

from engines.engine import Engine
from pipeline.core.model_steps import invert_tensors, render
from pipeline.core.payloads import ModelResult


def translate(engine: Engine, payload: dict, batch_size: int) -> ModelResult:
    codes = invert_tensors(engine, payload["inputs"], batch_size)
    return ModelResult(codes, render(engine, codes, batch_size))
