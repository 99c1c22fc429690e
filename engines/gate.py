"""The accuracy gate: an engine serves a job only if it matches the float32 PyTorch model on a fixed batch."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

# (max W+ error, min reconstruction PSNR in dB) by precision; reduced precision is held to 40 dB.
DEFAULT_THRESHOLDS = {"float32": (1e-3, 60.0), "bfloat16": (0.1, 40.0), "float16": (0.05, 40.0)}


@dataclass(frozen=True)
class GateThresholds:
    """Limits of the gate; a limit left None takes the precision's default."""

    max_wplus_error: float | None = None  # largest |W+ engine - W+ float32| over the batch
    min_psnr_db: float | None = None  # PSNR of the engine's reconstructions against float32 ones, images in [-1, 1]

    def resolved(self, precision: str) -> "GateThresholds":
        error, psnr = DEFAULT_THRESHOLDS[precision]
        return GateThresholds(
            error if self.max_wplus_error is None else self.max_wplus_error,
            psnr if self.min_psnr_db is None else self.min_psnr_db,
        )


@dataclass(frozen=True)
class StageCheck:
    stage: int
    wplus_max_error: float
    psnr_db: float


@dataclass(frozen=True)
class GateReport:
    engine: str  # e.g. "onnxruntime float32"
    thresholds: GateThresholds
    stages: tuple[StageCheck, ...]

    @property
    def failures(self) -> list[StageCheck]:
        t = self.thresholds
        return [s for s in self.stages if not (s.wplus_max_error <= t.max_wplus_error and s.psnr_db >= t.min_psnr_db)]

    @property
    def passed(self) -> bool:
        return not self.failures

    def describe(self) -> str:
        t = self.thresholds
        checks = "; ".join(
            f"stage {s.stage}: W+ max error {s.wplus_max_error:.3g} (limit {t.max_wplus_error:g}), "
            f"PSNR {s.psnr_db:.1f} dB (limit {t.min_psnr_db:g})"
            for s in (self.failures or self.stages)
        )
        return f"{self.engine} {'passed' if self.passed else 'FAILED'} the accuracy gate: {checks}"

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "GateReport":
        fields = json.loads(data)
        return cls(
            fields["engine"], GateThresholds(**fields["thresholds"]), tuple(StageCheck(**s) for s in fields["stages"])
        )


class AccuracyGateFailed(RuntimeError):
    def __init__(self, report: GateReport):
        super().__init__(report.describe())
        self.report = report


def psnr_db(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    """PSNR of images in [-1, 1] (clamped first, as they are shown), peak-to-peak 2."""
    mse = F.mse_loss(candidate.clamp(-1, 1).double(), reference.clamp(-1, 1).double()).item()
    return math.inf if mse == 0 else 10 * math.log10(4.0 / mse)


def gate_batch(batch: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    """The fixed gate batch: seeded smooth colour fields with some fine detail, in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, channels, 8, 8, generator=gen) * 2 - 1
    smooth = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    detail = (torch.rand(batch, channels, size, size, generator=gen) * 2 - 1) * 0.1
    return (smooth + detail).clamp(-1, 1)


def run_gate(
    engine_name: str,
    thresholds: GateThresholds,
    reference_stages: list[torch.Tensor],
    candidate_stages: list[torch.Tensor],
    render: Callable[[torch.Tensor], torch.Tensor],
    render_candidate: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> GateReport:
    """Compare per-stage W+ codes, and the reconstructions rendered from them.

    ``render`` is the float32 reference generator; ``render_candidate`` the engine's (default: the
    reference, for engines that change only the encoders).
    """
    render_candidate = render_candidate or render
    checks = []
    for stage, (ref, cand) in enumerate(zip(reference_stages, candidate_stages), start=1):
        cand = cand.float().to(ref.device)
        error = (cand - ref).abs().max().item()
        if not math.isfinite(error):
            error = math.inf
        checks.append(StageCheck(stage, error, psnr_db(render(ref), render_candidate(cand).float().to(ref.device))))
    return GateReport(engine_name, thresholds, tuple(checks))
