"""Runnable models: loading checkpoints and running them. The only layer that reads weights."""

from engines.checkpoints import (
    CheckpointError,
    CheckpointInfo,
    checkpoint_sha256,
    load_e2style,
    official_checkpoint,
    write_checkpoint,
)
from engines.inverter import Inverter, Synthesizer, load_generator, load_inverter
from engines.protocol import InversionModel

__all__ = [
    "CheckpointError",
    "CheckpointInfo",
    "InversionModel",
    "Inverter",
    "Synthesizer",
    "checkpoint_sha256",
    "load_e2style",
    "load_generator",
    "load_inverter",
    "official_checkpoint",
    "write_checkpoint",
]
