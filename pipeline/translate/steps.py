"""The translation job's CPU step: sketches (greyscale in [0, 1]) or label maps (one-hot) as the model's input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
from PIL import Image

from pipeline.core.decode import decode_records
from pipeline.core.image_formats import DEFAULT_FORMATS, open_image, open_labels, to_grey
from pipeline.core.payloads import Prepared
from pipeline.core.shards import Shard


NUM_SEGMENTATION_CLASSES = 19  # CelebAMask-HQ


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


# A colour per CelebAMask-HQ class (background black), to show label maps on contact sheets.
_PALETTE = np.array(
    [[0, 0, 0], [204, 0, 0], [76, 153, 0], [204, 204, 0], [51, 51, 255], [204, 0, 204], [0, 255, 255],
     [255, 204, 204], [102, 51, 0], [255, 0, 0], [102, 204, 0], [255, 255, 0], [0, 0, 153], [0, 0, 204],
     [255, 51, 153], [0, 204, 204], [0, 51, 0], [255, 153, 51], [0, 204, 0]],
    np.uint8,
)


def _sketch_picture(x: np.ndarray) -> np.ndarray:
    return np.repeat((x[0] * 255).round().astype(np.uint8)[..., None], 3, axis=2)


def _label_picture(x: np.ndarray) -> np.ndarray:
    return _PALETTE[x.argmax(0) % len(_PALETTE)]


@dataclass(frozen=True)
class Translation:
    """What one translation reads: the model's input channels, how a file becomes that input, and how the
    input is shown on contact sheets."""

    name: str
    channels: int
    read: Callable[[bytes, int, tuple[str, ...]], np.ndarray]  # (file, size, formats) -> float32 [C, size, size]
    picture: Callable[[np.ndarray], np.ndarray]  # model input -> uint8 RGB


TRANSLATIONS: dict[str, Translation] = {
    t.name: t
    for t in (
        Translation("sketch_to_face", 1, sketch_input, _sketch_picture),
        Translation(
            "segmentation_to_face", NUM_SEGMENTATION_CLASSES,
            lambda data, size, formats: segmentation_input(data, size, NUM_SEGMENTATION_CLASSES, formats), _label_picture,
        ),
    )
}


def translation(name: str) -> Translation:
    try:
        return TRANSLATIONS[name]
    except KeyError:
        raise ValueError(f"unknown translation {name!r}; known: {', '.join(TRANSLATIONS)}") from None


@dataclass(frozen=True)
class PrepareTranslate:
    """Read sketches (greyscale in [0, 1]) or label maps (one-hot) as the model's float input."""

    size: int
    input_spec: Mapping[str, Any]
    task: str
    preview_rows: int

    def __call__(self, shard: Shard, only: frozenset | None) -> tuple[Prepared, Any]:
        spec, task = self.input_spec, translation(self.task)
        formats = tuple(spec.get("formats", DEFAULT_FORMATS))
        keys, sources, rejects, inputs = decode_records(
            shard, spec["storage_options"], spec["image_column"], spec["key_column"], formats, only,
            lambda blob: task.read(blob, self.size, formats), spec.get("decode_threads", 1),
        )
        stacked = np.stack(inputs) if inputs else np.zeros((0, task.channels, self.size, self.size), np.float32)
        previews = [[task.picture(x)] for x in stacked[: self.preview_rows]]
        rows = [(i, "", {}) for i in range(len(keys))]
        return Prepared(keys, sources, rejects, rows, previews), {"inputs": stacked}
