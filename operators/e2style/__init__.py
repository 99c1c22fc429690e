"""E2Style: efficient W+ encoders with multi-stage residual refinement."""

from operators.e2style.encoder import E2StyleEncoder, EncoderConfig
from operators.e2style.model import E2Style, E2StyleConfig

__all__ = ["E2Style", "E2StyleConfig", "E2StyleEncoder", "EncoderConfig"]
