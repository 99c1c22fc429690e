"""The output side of the jobs that make images (restoration, translation, editing), on CPU workers: names
built from keys that stay inside their folder, unique within it and within storage limits, encoding,
labelled contact sheets, and the write step that commits a shard's images, manifest rows and preview.

A prepared shard of these jobs is (meta, payload). meta: keys, sources, rejects, ``rows`` (record index,
variant, parameters) in output order, and ``previews`` (input pictures of the first records, with their
titles). payload: the arrays the model step takes.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw, ImageFont

from pipeline.core.job import Plan
from pipeline.core.payloads import ModelResult, Prepared, Provenance, ShardStats
from pipeline.core.shards import IMAGE_EXTENSIONS, Shard, shard_inputs
from pipeline.core.store import IMAGES, LEGACY_IMAGES, PREVIEW_GAP, PREVIEW_TILE, OutputStore, manifest_table


EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}


PREVIEW_COLUMNS = 12  # pictures per contact-sheet row at most


MAX_NAME_BYTES, MAX_PATH_BYTES = 255, 1024  # a file name on common file systems; an S3 object key


def safe_name(text: str) -> str:
    """A key as a relative path that stays under its folder: no empty, '.' or '..' parts, and only
    letters, digits and ._=+- in names."""
    parts = [p for p in text.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return "/".join(re.sub(r"[^A-Za-z0-9._=+-]", "_", p) for p in parts) or "_"


def split_extension(key: str) -> tuple[str, str]:
    """(the key without its image file extension, that extension in lower case without its dot, or "")."""
    if key.lower().endswith(IMAGE_EXTENSIONS):
        stem, extension = key.rsplit(".", 1)
        return stem, extension.lower()
    return key, ""


# An image extension that ends a key named inside a variant ("to-face_05.png-0", "mix-styles/b.jpg").
_VARIANT_KEY_EXTENSION = re.compile(
    "(?:" + "|".join(re.escape(e) for e in IMAGE_EXTENSIONS) + ")(?=-|/|$)", re.IGNORECASE
)


def image_name(key: str, variant: str, image_format: str, keep_extension: bool = False, tag: str = "") -> str:
    """<key without its image extension>[-<its extension>][.<variant>][-<tag>].<format's extension>: the
    name of a row's image under _images/<shard>/. The keys a variant names lose their extensions too."""
    stem, extension = split_extension(key)
    if keep_extension and extension:
        stem = f"{stem}-{extension}"
    variant = _VARIANT_KEY_EXTENSION.sub("", variant)
    suffix = f".{safe_name(variant).replace('/', '_')}" if variant else ""
    return f"{safe_name(stem)}{suffix}{f'-{tag}' if tag else ''}.{EXTENSIONS[image_format]}"


def output_names(
    rows: list, keys: list[str], image_format: str, taken: set[str], folder_bytes: int
) -> tuple[list[str | None], dict[int, str]]:
    """Each row's image name (``image_name``; None for the rows of refused records), and the records (by
    index) whose images cannot be written, with why.

    Names stay unique within the shard's folder: records whose keys differ only in their image extensions
    keep them (``face.png``, ``face.jpg`` -> ``face-png.png``, ``face-jpg.png``), and a name still taken,
    by an earlier row or by the shard's images written before (``taken``), gets a hash of the row's key
    and variant (keys that differ only in characters names replace: ``a b.png``, ``a_b.png`` ->
    ``a_b.png``, ``a_b-3f2c9d1e.png``). A record whose name is too long for file systems (255 bytes a name)
    or object stores (1024 bytes a key) is refused."""
    by_stem: dict[str, list[int]] = {}
    for r in dict.fromkeys(r for r, _, _ in rows):
        by_stem.setdefault(safe_name(split_extension(keys[r])[0]), []).append(r)
    keep = set()
    for records in by_stem.values():
        extensions = [split_extension(keys[r])[1] for r in records]
        keep.update(r for r, e in zip(records, extensions) if len(records) > 1 and e and extensions.count(e) == 1)
    used, named, problems = set(taken), [], {}
    for r, variant, _ in rows:
        name = image_name(keys[r], variant, image_format, r in keep)
        if name in used:
            tag = hashlib.sha256(f"{keys[r]}\n{variant}".encode()).hexdigest()[:8]
            name = image_name(keys[r], variant, image_format, r in keep, tag)
        problem = None if r in problems else _name_problem(name, used, folder_bytes)
        if problem:
            problems[r] = problem
        used.add(name)
        named.append(name)
    return [None if r in problems else name for (r, _, _), name in zip(rows, named)], problems


def _name_problem(name: str, used: set[str], folder_bytes: int) -> str | None:
    longest = max(len(part.encode()) for part in name.split("/"))
    path_bytes = folder_bytes + 1 + len(name.encode())
    if longest > MAX_NAME_BYTES or path_bytes > MAX_PATH_BYTES:
        return (f"output name {name[:60]!r}... is too long ({longest} bytes in one name, at most {MAX_NAME_BYTES}; "
                f"{path_bytes} in the path, at most {MAX_PATH_BYTES})")
    if name in used:  # even with the hash: the same key and variant a third time
        return f"output name {name!r} is taken by another row of the same key and variant"
    return None


IMAGE_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


def encode_image(image: np.ndarray, format: str, quality: int = 95) -> bytes:
    """uint8 RGB [H, W, 3] -> PNG (lossless), JPEG or WebP bytes."""
    buffer = io.BytesIO()
    options = {} if format == "png" else {"quality": quality}
    Image.fromarray(image).save(buffer, format=IMAGE_FORMATS[format], **options)
    return buffer.getvalue()


LABEL_HEIGHT = 14  # a line of Pillow's default bitmap font (11 px high) and its margin
LABEL_COLOUR = (40, 40, 40)
Label = tuple[str, Sequence[str]]  # a contact-sheet row's key and its pictures' titles


def contact_sheet(
    rows: Sequence[Sequence[np.ndarray]],
    tile: int = PREVIEW_TILE,
    gap: int = PREVIEW_GAP,
    labels: Sequence[Label] | None = None,
    key_width: int = PREVIEW_TILE,
) -> bytes:
    """PNG of a grid: one row per record (e.g. input, output, reference), each image scaled to ``tile``.

    With ``labels`` (one per row) each row has its key in a column of ``key_width`` on the left (wrapped
    over as many lines as the row has room for) and its pictures' titles on a strip of LABEL_HEIGHT above
    them, in Pillow's default bitmap font. Every row is as high as every other, so that a sheet can be cut
    between rows (``OutputStore.write_contact_sheet``)."""
    columns = max(len(r) for r in rows)
    label = LABEL_HEIGHT if labels is not None else 0
    left = gap + (key_width + gap if labels is not None else 0)
    row_height = label + tile + gap
    sheet = Image.new("RGB", (left + columns * (tile + gap), gap + len(rows) * row_height), (255, 255, 255))
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default_imagefont()
    line = font.getbbox("Ag")[3] + 1
    for i, row in enumerate(rows):
        top = gap + i * row_height
        for j, image in enumerate(row):
            picture = Image.fromarray(image).convert("RGB").resize((tile, tile), Image.BILINEAR)
            sheet.paste(picture, (left + j * (tile + gap), top + label))
        if labels is None:
            continue
        key, titles = labels[i]
        for n, text in enumerate(_wrapped(_printable(key), key_width, (label + tile) // line, font)):
            draw.text((gap, top + 1 + n * line), text, fill=LABEL_COLOUR, font=font)
        for j, title in enumerate(titles[: len(row)]):
            text = _fitted(_printable(title), tile, font)
            centred = left + j * (tile + gap) + (tile - font.getlength(text)) // 2
            draw.text((centred, top + 1), text, fill=LABEL_COLOUR, font=font)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


def _printable(text: str) -> str:
    """``text`` in what the default bitmap font draws (printable Latin-1); anything else becomes '?'."""
    return "".join(c if c.isprintable() and ord(c) < 256 else "?" for c in text)


def _fitted(text: str, width: int, font: ImageFont.ImageFont) -> str:
    """``text``, cut to end in '...' where it is wider than ``width`` pixels."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "...") > width:
        text = text[:-1]
    return text + "..."


def _wrapped(text: str, width: int, lines: int, font: ImageFont.ImageFont) -> list[str]:
    """``text`` cut into at most ``lines`` lines of ``width`` pixels, the last ending in '...' if it does not fit."""
    wrapped = []
    while text and len(wrapped) < lines:
        end = len(text)
        while end > 1 and font.getlength(text[:end]) > width:
            end -= 1
        wrapped.append(text[:end])
        text = text[end:]
    if text and wrapped:
        wrapped[-1] = _fitted(wrapped[-1] + text, width, font)
    return wrapped


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
    output_title: str = "output"  # the contact sheet's title of a picture the job made, when its row has no variant

    def __call__(
        self, store: OutputStore, shard: Shard, meta: Prepared, result: ModelResult, started: float, retry: bool
    ) -> ShardStats:
        keys, sources = meta.keys, meta.sources
        taken = set()
        if retry:  # recovered records must not take the names of the images the shard already has
            owned = store.owned_files(shard.name, store.committed_stats(shard.name))
            for folder in (f"{IMAGES}/{shard.name}/", f"{LEGACY_IMAGES}/{shard.name}/"):
                taken |= {path[len(folder) :] for path in owned if path.startswith(folder)}
        folder_bytes = len(store.images_dir(shard.name).encode())
        names, unwritable = output_names(meta.rows, keys, self.image_format, taken, folder_bytes)
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
        metrics = tuple(result.metrics)
        if retry:
            return store.retry_rejects(
                shard.name, table, rejects, self.row_group_size, started, images=encoded, metrics=metrics
            )
        pictures, labels = self._preview(meta, rows, images)
        return store.write_shard(
            shard.name, table, rejects, self.row_group_size, started, shard_inputs(shard), images=encoded,
            preview=contact_sheet(pictures, labels=labels) if pictures else None, preview_rows=len(pictures),
            metrics=metrics,
        )

    def _preview(self, meta: Prepared, rows: list, images: np.ndarray) -> tuple[list[list[np.ndarray]], list[Label]]:
        """The first records' rows of pictures (what the job read, then what it made) and their labels."""
        outputs: dict[int, list[tuple[str, np.ndarray]]] = {}
        for (r, variant, _), image in zip(rows, images):
            if r < self.preview_rows:
                outputs.setdefault(r, []).append((variant or self.output_title, image))
        pictures, labels = [], []
        for r in sorted(outputs):
            inputs = meta.previews[r] if r < len(meta.previews) else []
            titles = [*meta.preview_titles, *["input"] * len(inputs)][: len(inputs)]
            titled = [*zip(titles, inputs), *outputs[r]][:PREVIEW_COLUMNS]
            pictures.append([image for _, image in titled])
            labels.append((meta.keys[r], [title for title, _ in titled]))
        return pictures, labels


def image_writer(plan: Plan, task: str) -> WriteImages:
    out = plan.spec.output
    return WriteImages(
        plan.provenance, task, out.latent_dtype, out.row_group_size, out.image_format, out.quality,
        out.contact_sheet_rows, plan.kind.verb,
    )
