"""What every runnable E2Style model offers, whichever loader made it: ``load_inverter`` (the float32
research-code reference) or ``build_engine`` (a backend chosen by ``EngineOptions``)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from engines.checkpoints import CheckpointInfo
from operators.e2style import E2StyleConfig


@runtime_checkable
class InversionModel(Protocol):
    """An E2Style model on one device: inputs of any floating dtype, outputs float32 on ``device``."""

    config: E2StyleConfig
    stages: int  # the stages ``invert`` runs
    device: torch.device
    info: CheckpointInfo

    def invert(self, images: torch.Tensor, all_stages: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """Images [B, C, S, S] (RGB in [-1, 1] for the official models) -> W+ [B, num_ws, style_dim].

        With ``all_stages`` the codes after every stage, first to last, as a list.
        """
        ...

    def synthesize(self, codes: torch.Tensor) -> torch.Tensor:
        """W+ [B, num_ws, style_dim] -> the raw generator output pooled to [B, 3, S, S], not clamped."""
        ...
