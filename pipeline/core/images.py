"""The output side of the jobs that make images (restoration, translation, editing), on CPU workers: names
that stay inside their folder and fit storage limits, encoding, contact sheets, and the write step that
commits a shard's images, manifest rows and preview.

A prepared shard of these jobs is (meta, payload). meta: keys, sources, rejects, ``rows`` (record index,
variant, parameters) in output order, and ``previews`` (input pictures of the first records). payload: the
arrays the model step takes.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa
from PIL import Image

from pipeline.core.job import Plan
from pipeline.core.payloads import ModelResult, Prepared, Provenance, ShardStats
from pipeline.core.shards import IMAGE_EXTENSIONS, Shard, shard_inputs
from pipeline.core.store import PREVIEW_GAP, PREVIEW_TILE, OutputStore, manifest_table


EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}


PREVIEW_COLUMNS = 12  # pictures per contact-sheet row at most


MAX_NAME_BYTES, MAX_PATH_BYTES = 255, 1024  # a file name on common file systems; an S3 object key


def safe_name(text: str) -> str:
    """A key as a relative path that stays under its folder: no empty, '.' or '..' parts, and only
    letters, digits and ._=+- in names."""
    parts = [p for p in text.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return "/".join(re.sub(r"[^A-Za-z0-9._=+-]", "_", p) for p in parts) or "_"


def image_name(key: str, variant: str, image_format: str) -> str:
    """images/<shard>/<key without its image extension>[.<variant>].<format's extension>"""
    stem = key[: -len(key.rsplit(".", 1)[1]) - 1] if key.lower().endswith(IMAGE_EXTENSIONS) else key
    suffix = f".{safe_name(variant).replace('/', '_')}" if variant else ""
    return f"{safe_name(stem)}{suffix}.{EXTENSIONS[image_format]}"


def unwritable_names(
    rows: list, names: list[str], keys: list[str], taken: set[str], folder_bytes: int
) -> dict[int, str]:
    """Records (by index) whose output images cannot be written, and why: a name too long for file
    systems (255 bytes a name) or object stores (1024 bytes a key), or one that another record's output
    already has (keys that differ only in characters the names replace). The first record keeps a name."""
    owner: dict[str, int] = {name: -1 for name in taken}
    problems: dict[int, str] = {}
    for (r, _, _), name in zip(rows, names):
        if r in problems:
            continue
        longest = max(len(part.encode()) for part in name.split("/"))
        if longest > MAX_NAME_BYTES or folder_bytes + 1 + len(name.encode()) > MAX_PATH_BYTES:
            problems[r] = (f"output name {name[:60]!r}... is too long ({longest} bytes in one name, at most "
                           f"{MAX_NAME_BYTES}; {folder_bytes + 1 + len(name.encode())} in the path, at most {MAX_PATH_BYTES})")
        elif owner.setdefault(name, r) != r:
            other = "a record committed earlier" if owner[name] < 0 else f"record {keys[owner[name]]!r}"
            problems[r] = f"output name {name!r} is also that of {other} (keys differ only in characters the names replace)"
    return problems


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


@dataclass(frozen=True)
class WriteImages:
    """Commit a shard of an application job: its images, its manifest rows, its preview, then its stats."""

    provenance: Provenance
    task: str
    latent_dtype: str
    row_group_size: int
    image_format: str
    quality: int
    preview_rows: int

    def __call__(
        self, store: OutputStore, shard: Shard, meta: Prepared, result: ModelResult, started: float, retry: bool
    ) -> ShardStats:
        keys, sources = meta.keys, meta.sources
        names = [image_name(keys[r], variant, self.image_format) for r, variant, _ in meta.rows]
        taken = set()
        if retry:  # recovered records must not take the names of the images the shard already has
            folder = f"images/{shard.name}/"
            owned = store.owned_files(shard.name, store.committed_stats(shard.name))
            taken = {path[len(folder) :] for path in owned if path.startswith(folder)}
        unwritable = unwritable_names(meta.rows, names, keys, taken, len(store.images_dir(shard.name).encode()))
        rejects = meta.rejects + [(keys[r], sources[r], reason) for r, reason in sorted(unwritable.items())]
        kept = [i for i, (r, _, _) in enumerate(meta.rows) if r not in unwritable]
        rows = [meta.rows[i] for i in kept]
        names = [names[i] for i in kept]
        images = result.images[kept]
        columns = {
            "task": ([self.task] * len(rows), pa.string()),
            "params": ([json.dumps(p, sort_keys=True) for _, _, p in rows], pa.string()),
            "image": ([store.image_uri(shard.name, n) for n in names], pa.string()),
        }
        for metric, values in result.metrics.items():
            columns[metric] = ([float(values[i]) for i in kept], pa.float64())
        table = manifest_table(
            [keys[r] for r, _, _ in rows],
            [sources[r] for r, _, _ in rows],
            result.codes[kept],
            self.provenance.to_json(shard=shard.name),
            self.latent_dtype,
            columns,
        )
        encoded = {n: encode_image(image, self.image_format, self.quality) for n, image in zip(names, images)}
        if retry:
            return store.retry_rejects(shard.name, table, rejects, self.row_group_size, started, images=encoded)
        preview = self._preview(meta, rows, images)
        return store.write_shard(
            shard.name, table, rejects, self.row_group_size, started, shard_inputs(shard),
            images=encoded, preview=contact_sheet(preview) if preview else None, preview_rows=len(preview),
        )

    def _preview(self, meta: Prepared, rows: list, images: np.ndarray) -> list[list[np.ndarray]]:
        outputs: dict[int, list[np.ndarray]] = {}
        for (r, _, _), image in zip(rows, images):
            if r < self.preview_rows:
                outputs.setdefault(r, []).append(image)
        previews = meta.previews
        return [
            ((previews[r] if r < len(previews) else []) + outputs[r])[:PREVIEW_COLUMNS] for r in sorted(outputs)
        ]


def image_writer(plan: Plan, task: str) -> WriteImages:
    out = plan.spec.output
    return WriteImages(
        plan.provenance, task, out.latent_dtype, out.row_group_size, out.image_format, out.quality, out.contact_sheet_rows
    )
