"""Preparing inputs and outputs of the application jobs on CPU workers: the official evaluation
degradations applied to clean images, translation inputs, image encoding and contact sheets.

Degradations are seeded per record key, so a record is degraded the same way whichever shard, worker or
run handles it.
"""

from __future__ import annotations

import hashlib
import io
from typing import Sequence

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
from pipeline.image_formats import DEFAULT_FORMATS, open_image, open_labels, to_grey
from pipeline.sink import PREVIEW_GAP, PREVIEW_TILE

RESTORATION_TASKS = ("colorization", "denoise", "inpainting", "super_resolution")
NUM_SEGMENTATION_CLASSES = 19  # CelebAMask-HQ


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
    size = image.shape[0]
    x = torch.tensor(image).permute(2, 0, 1)[None]  # a copy: decoded arrays may be read-only
    generator = torch.Generator().manual_seed(record_seed(key, seed))
    if task == "colorization":
        out = greyscale_uint8(x, params.get("grey_weights", "official"))
    elif task == "denoise":
        clean = x.double() / 255
        if params.get("noise", "gaussian") == "gaussian":
            noisy = gaussian_noise(clean, params.get("variance", 0.01), generator)
        else:
            noisy = salt_and_pepper(clean, params.get("amount", 0.05), 0.5, generator)
        out = (noisy * 255).round().to(torch.uint8)
    elif task == "inpainting":
        draws = torch.randint(0, 2, (2,), generator=generator).tolist()
        a_x = params.get("corner_a_x", (35, 220)[draws[0]])
        b_x = params.get("corner_b_x", (35, 70)[draws[1]])
        out = apply_mask(x.double(), triangle_mask(size, a_x, b_x)).to(torch.uint8)
    elif task == "super_resolution":
        factor = params["factor"]
        small = to_uint8_truncating(bicubic_downsample(x.double() / 255, factor))
        low = Image.fromarray(small[0].permute(1, 2, 0).numpy())
        return np.asarray(low.resize((size, size), Image.BILINEAR), dtype=np.uint8)
    else:
        raise ValueError(f"unknown restoration task {task!r}; known: {', '.join(RESTORATION_TASKS)}")
    return out[0].permute(1, 2, 0).numpy()


def sketch_input(data: bytes, size: int, formats: tuple[str, ...] = DEFAULT_FORMATS) -> np.ndarray:
    """A sketch file -> float32 [1, size, size] in [0, 1] (greyscale, 16-bit scaled, EXIF orientation
    applied, bilinear resize, no normalisation)."""
    grey = to_grey(open_image(data, formats))
    if grey.size != (size, size):
        grey = grey.resize((size, size), Image.BILINEAR)
    return (np.asarray(grey, dtype=np.float32) / 255)[None]


def segmentation_input(
    data: bytes, size: int, classes: int = NUM_SEGMENTATION_CLASSES, formats: tuple[str, ...] = DEFAULT_FORMATS
) -> np.ndarray:
    """A label map (class index per pixel) -> float32 one-hot [classes, size, size].

    Resized by nearest neighbour, so no pixel gets a label that is a blend of two others; the values are
    labels, never rescaled. A label outside 0..classes-1 is an error naming it.
    """
    img = open_labels(data, formats)
    labels = img if img.size == (size, size) else img.resize((size, size), Image.NEAREST)
    labels = np.asarray(labels).astype(np.int64)
    if labels.min() < 0 or labels.max() >= classes:
        bad = labels.min() if labels.min() < 0 else labels.max()
        raise ValueError(f"label map holds label {int(bad)}, outside 0..{classes - 1}")
    return (np.arange(classes)[:, None, None] == labels[None]).astype(np.float32)


IMAGE_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


def encode_image(image: np.ndarray, format: str, quality: int = 95) -> bytes:
    """uint8 RGB [H, W, 3] -> PNG (lossless), JPEG or WebP bytes."""
    buffer = io.BytesIO()
    options = {} if format == "png" else {"quality": quality}
    Image.fromarray(image).save(buffer, format=IMAGE_FORMATS[format], **options)
    return buffer.getvalue()


def contact_sheet(rows: Sequence[Sequence[np.ndarray]], tile: int = PREVIEW_TILE, gap: int = PREVIEW_GAP) -> bytes:
    """PNG of a grid: one row per record (e.g. input, output, reference), each image scaled to ``tile``."""
    columns = max(len(r) for r in rows)
    sheet = Image.new("RGB", (columns * (tile + gap) + gap, len(rows) * (tile + gap) + gap), (255, 255, 255))
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            picture = Image.fromarray(image).convert("RGB").resize((tile, tile), Image.BILINEAR)
            sheet.paste(picture, (gap + j * (tile + gap), gap + i * (tile + gap)))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()
