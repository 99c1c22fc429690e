"""The restoration job's CPU step: decoding a shard and, to evaluate a checkpoint, degrading each clean image
as the task's training did (``pipeline.restore.tasks``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from pipeline.core.decode import decode_shard
from pipeline.core.payloads import Prepared
from pipeline.core.shards import Shard
from pipeline.restore.tasks import degrade, restoration_task


@dataclass(frozen=True)
class PrepareRestore:
    """Decode the shard; with ``evaluate`` degrade each clean image as the task's training did."""

    size: int
    input_spec: Mapping[str, Any]
    task: str
    evaluate: bool
    seed: int
    degradation: Mapping[str, Any]
    preview_rows: int

    def __call__(self, shard: Shard, only: frozenset | None) -> tuple[Prepared, Any]:
        # Low-resolution inputs are brought to the model's size as the official transform does (bilinear).
        upsample = restoration_task(self.task).low_resolution_inputs and not self.evaluate
        decoded = decode_shard(shard, self.size, self.input_spec, only, resize=self.input_spec["resize"] or upsample)
        params = {"evaluate": self.evaluate, **({"seed": self.seed, **self.degradation} if self.evaluate else {})}
        rows = [(i, "", params) for i in range(len(decoded.keys))]
        if self.evaluate:
            degraded = [degrade(self.task, image, key, self.seed, **self.degradation) for image, key in zip(decoded.images, decoded.keys)]
            inputs = np.stack(degraded) if degraded else decoded.images
            payload = {"inputs": inputs, "clean": decoded.images}
            previews = [[clean, bad] for clean, bad in zip(decoded.images[: self.preview_rows], inputs)]
            titles = ("clean", "degraded")
        else:
            payload = {"inputs": decoded.images}
            previews = [[image] for image in decoded.images[: self.preview_rows]]
            titles = ("input",)
        return Prepared(decoded.keys, decoded.sources, decoded.rejects, rows, previews, titles), payload
