"""The restoration job's model step, in the inference actors."""

from __future__ import annotations

from dataclasses import dataclass
from engines.engine import Engine
from operators.metrics import psnr, ssim
from pipeline.core.payloads import ModelResult
from pipeline.core.model_steps import images_to_unit, invert_images, render


@dataclass(frozen=True)
class RestoreModel:
    evaluate: bool

    def __call__(self, engine: Engine, payload: dict, batch_size: int) -> ModelResult:
        codes = invert_images(engine, payload["inputs"], batch_size)
        images = render(engine, codes, batch_size)
        if not self.evaluate:
            return ModelResult(codes, images)
        clean = images_to_unit(payload["clean"])
        restored, degraded = images_to_unit(images), images_to_unit(payload["inputs"])
        metrics = {
            "psnr": psnr(clean, restored).numpy(),
            "ssim": ssim(clean, restored).numpy(),
            "degraded_psnr": psnr(clean, degraded).numpy(),
        }
        return ModelResult(codes, images, metrics)
