"""The editing job's model step, in the inference actors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from engines.engine import Engine
from pipeline.core.model_steps import invert_images, render
from pipeline.core.payloads import ModelResult
from pipeline.edit.kinds import EditParameters, edit_kind


@dataclass(frozen=True)
class EditModel:
    """Edits W+ codes (stored, or inverted here from images) row by row as ``payload["plan"]`` says."""

    kind: str
    parameters: EditParameters

    def __call__(self, engine: Engine, payload: dict, batch_size: int) -> ModelResult:
        plan = payload["plan"]
        if edit_kind(self.kind).pastes_images:  # the pasted images, inverted and regenerated
            codes = invert_images(engine, payload["images"], batch_size)
            return ModelResult(codes, render(engine, codes, batch_size))
        codes = self._codes(engine, payload, "", batch_size)
        partners = self._codes(engine, payload, "partner_", batch_size)
        edited = np.stack([self._edit(codes, partners, r, j, value) for r, j, value in plan]) if plan else codes[:0]
        return ModelResult(edited, render(engine, edited, batch_size))

    @staticmethod
    def _codes(engine: Engine, payload: dict, prefix: str, batch_size: int) -> np.ndarray:
        if f"{prefix}codes" in payload:
            return payload[f"{prefix}codes"]
        return invert_images(engine, payload[f"{prefix}images"], batch_size)

    def _edit(self, codes: np.ndarray, partners: np.ndarray, r: int, j: int, value: Any) -> np.ndarray:
        partner = torch.as_tensor(partners[j]) if j >= 0 else None
        out = edit_kind(self.kind).apply(torch.as_tensor(codes[r : r + 1]), partner, value, self.parameters)
        return out[0].numpy()
