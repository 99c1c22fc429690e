"""The restorations, one table: each task's spec parameters, what it records of them, its degradation for
evaluation, and what users' inputs need. Looked up by name (``restoration_task``), never compared by it.

Degradations are seeded per record key, so a record is degraded the same way whichever shard, worker or
run handles it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import torch
from PIL import Image

from operators.degradations import (
    apply_mask,
    bicubic_downsample,
    gaussian_noise,
    greyscale_uint8,
    salt_and_pepper,
    to_uint8_truncating,
    triangle_mask,
)

Degrade = Callable[[torch.Tensor, torch.Generator, Mapping[str, Any]], torch.Tensor]


@dataclass(frozen=True)
class RestorationTask:
    name: str
    parameters: tuple[str, ...]  # the task section's fields that belong to this task
    # uint8 [1, 3, S, S], a generator seeded by the record's key, the parameters -> degraded uint8 [1, 3, S, S]
    degrade: Degrade
    needed_to_evaluate: tuple[str, ...] = ()  # parameters without a default that evaluation needs
    low_resolution_inputs: bool = False  # users' inputs are small: brought to the model's size bilinearly
    recorded: Callable[[Any], dict] | None = None  # the parameters a row records (default: all of them)
    # Why the task section cannot evaluate the model's image size (section, size -> reason or None).
    size_check: Callable[[Any, int], str | None] | None = None

    def recorded_parameters(self, section) -> dict[str, Any]:
        if self.recorded is not None:
            return self.recorded(section)
        return {name: getattr(section, name) for name in self.parameters}

    def size_problem(self, section, size: int) -> str | None:
        """Why this task cannot evaluate the model's ``size`` px images with ``section``'s parameters."""
        return self.size_check(section, size) if self.size_check else None


def _factor_problem(section, size: int) -> str | None:
    factor = section.factor
    if factor is not None and (size % factor or (3 * factor + 1) // 2 >= size):
        return (f"task.factor: {factor} cannot downsample the model's {size} px images (it must divide {size} "
                f"and its padding of {3 * factor // 2} px fit inside the image)")
    return None


def _grey(x: torch.Tensor, generator: torch.Generator, params: Mapping[str, Any]) -> torch.Tensor:
    return greyscale_uint8(x, params.get("grey_weights", "official"))


def _noise(x: torch.Tensor, generator: torch.Generator, params: Mapping[str, Any]) -> torch.Tensor:
    clean = x.double() / 255
    if params.get("noise", "gaussian") == "gaussian":
        noisy = gaussian_noise(clean, params.get("variance", 0.01), generator)
    else:
        noisy = salt_and_pepper(clean, params.get("amount", 0.05), 0.5, generator)
    return (noisy * 255).round().to(torch.uint8)


def _triangle(x: torch.Tensor, generator: torch.Generator, params: Mapping[str, Any]) -> torch.Tensor:
    draws = torch.randint(0, 2, (2,), generator=generator).tolist()
    a_x = params.get("corner_a_x", (35, 220)[draws[0]])
    b_x = params.get("corner_b_x", (35, 70)[draws[1]])
    return apply_mask(x.double(), triangle_mask(x.shape[-1], a_x, b_x)).to(torch.uint8)


def _downsample(x: torch.Tensor, generator: torch.Generator, params: Mapping[str, Any]) -> torch.Tensor:
    small = to_uint8_truncating(bicubic_downsample(x.double() / 255, params["factor"]))
    low = Image.fromarray(small[0].permute(1, 2, 0).numpy())
    size = x.shape[-1]
    back = np.array(low.resize((size, size), Image.BILINEAR), dtype=np.uint8)
    return torch.from_numpy(back).permute(2, 0, 1)[None]


def _denoise_recorded(section) -> dict[str, Any]:
    amount = {"variance": section.variance} if section.noise == "gaussian" else {"amount": section.amount}
    return {"noise": section.noise, **amount}


TASKS: dict[str, RestorationTask] = {
    task.name: task
    for task in (
        RestorationTask("colorization", ("grey_weights",), _grey),
        RestorationTask("denoise", ("noise", "variance", "amount"), _noise, recorded=_denoise_recorded),
        RestorationTask("inpainting", (), _triangle),
        RestorationTask(
            "super_resolution", ("factor",), _downsample, needed_to_evaluate=("factor",), low_resolution_inputs=True,
            size_check=_factor_problem,
        ),
    )
}
PARAMETERS = tuple(sorted({p for task in TASKS.values() for p in task.parameters}))


def restoration_task(name: str) -> RestorationTask:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown restoration task {name!r}; known: {', '.join(TASKS)}") from None


def record_seed(key: str, seed: int) -> int:
    """A 63-bit seed from the job's seed and the record's key."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") >> 1


def degrade(task: str, image: np.ndarray, key: str, seed: int, **params) -> np.ndarray:
    """uint8 RGB [S, S, 3] -> the degraded uint8 RGB image the task's model takes.

    colorization: grey (official swapped weights unless ``grey_weights="bt601"``); denoise: Gaussian noise
    of ``variance`` (default 0.01) or, with ``noise="salt_and_pepper"``, ``amount`` (default 0.05);
    inpainting: the official triangle (``corner_a_x`` 35/220, ``corner_b_x`` 35/70, else drawn from the
    seed like training); super_resolution: the anti-aliased bicubic downsampling by ``factor``, truncated
    to uint8, then PIL bilinear back to the input size (the official SR transform).
    """
    x = torch.tensor(image).permute(2, 0, 1)[None]  # a copy: decoded arrays may be read-only
    generator = torch.Generator().manual_seed(record_seed(key, seed))
    out = restoration_task(task).degrade(x, generator, params)
    return out[0].permute(1, 2, 0).numpy()
