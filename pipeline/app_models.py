"""The model steps of the restoration, translation and editing jobs, run inside the inference actors on
the payloads of ``pipeline.app_tasks``. Each returns {"codes": W+ per output row, "images": uint8 RGB per
output row} and, for evaluated restorations, {"metrics": name -> values}."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from engines.engine import Engine
from operators.edits import apply_direction, interpolate, mix_styles
from operators.images import images_to_tensor, tensor_to_images
from operators.metrics import psnr, ssim
from pipeline.actors import invert_images


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


@dataclass(frozen=True)
class RestoreModel:
    evaluate: bool

    def __call__(self, engine: Engine, payload: dict, batch_size: int) -> dict:
        codes = invert_images(engine, payload["inputs"], batch_size)
        images = render(engine, codes, batch_size)
        result: dict[str, Any] = {"codes": codes, "images": images}
        if self.evaluate:
            clean = images_to_unit(payload["clean"])
            restored, degraded = images_to_unit(images), images_to_unit(payload["inputs"])
            result["metrics"] = {
                "psnr": psnr(clean, restored).numpy(),
                "ssim": ssim(clean, restored).numpy(),
                "degraded_psnr": psnr(clean, degraded).numpy(),
            }
        return result


def images_to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float64 [N, 3, H, W] in [0, 1], where the metrics are computed."""
    return torch.as_tensor(images).permute(0, 3, 1, 2).double() / 255


def translate(engine: Engine, payload: dict, batch_size: int) -> dict:
    codes = invert_tensors(engine, payload["inputs"], batch_size)
    return {"codes": codes, "images": render(engine, codes, batch_size)}


@dataclass(frozen=True)
class EditModel:
    """Edits W+ codes (stored, or inverted here from images) row by row as ``payload["plan"]`` says."""

    kind: str
    layers: tuple[int, ...] = ()
    direction: np.ndarray | None = None
    steps: int = 0

    def __call__(self, engine: Engine, payload: dict, batch_size: int) -> dict:
        plan = payload["plan"]
        if self.kind == "face_swap":  # the pasted images, inverted and regenerated
            codes = invert_images(engine, payload["images"], batch_size)
            return {"codes": codes, "images": render(engine, codes, batch_size)}
        codes = self._codes(engine, payload, "", batch_size)
        partners = self._codes(engine, payload, "partner_", batch_size)
        edited = np.stack([self._edit(codes, partners, r, j, value) for r, j, value in plan]) if plan else codes[:0]
        return {"codes": edited, "images": render(engine, edited, batch_size)}

    @staticmethod
    def _codes(engine: Engine, payload: dict, prefix: str, batch_size: int) -> np.ndarray:
        if f"{prefix}codes" in payload:
            return payload[f"{prefix}codes"]
        return invert_images(engine, payload[f"{prefix}images"], batch_size)

    def _edit(self, codes: np.ndarray, partners: np.ndarray, r: int, j: int, value: Any) -> np.ndarray:
        code = torch.as_tensor(codes[r : r + 1])
        if self.kind == "direction":
            out = apply_direction(code, torch.as_tensor(self.direction), value, self.layers)
        elif self.kind == "mixing":
            out = mix_styles(code, torch.as_tensor(partners[j : j + 1]), self.layers)
        else:
            out = interpolate(code[0], torch.as_tensor(partners[j]), self.steps)[value][None]
        return out[0].numpy()
