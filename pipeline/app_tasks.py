"""The CPU parts of the restoration, translation and editing jobs: preparing a shard's model input, and
writing its images, manifest rows and preview. Their model parts are in ``pipeline.app_models``.

A prepared shard is (meta, payload). meta: keys, sources, rejects, ``rows`` (record index, variant,
parameters) in output order, and ``previews`` (input pictures of the first records). payload: the arrays
the model step takes, with ``plan`` (record index, partner index, value) per row for edits.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from operators.edits import paste_center
from pipeline.decode import read_and_decode, read_records
from pipeline.image_formats import DEFAULT_FORMATS, extensions
from pipeline.shards import IMAGE_EXTENSIONS, Shard, shard_inputs
from pipeline.sink import LATENT_COLUMN, OutputStore, manifest_table
from pipeline.storage import filesystem
from pipeline.task_inputs import contact_sheet, degrade, encode_image, segmentation_input, sketch_input

EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
PREVIEW_COLUMNS = 12  # pictures per contact-sheet row at most
MAX_NAME_BYTES, MAX_PATH_BYTES = 255, 1024  # a file name on common file systems; an S3 object key
# A colour per CelebAMask-HQ class (background black), to show label maps on contact sheets.
_PALETTE = np.array(
    [[0, 0, 0], [204, 0, 0], [76, 153, 0], [204, 204, 0], [51, 51, 255], [204, 0, 204], [0, 255, 255],
     [255, 204, 204], [102, 51, 0], [255, 0, 0], [102, 204, 0], [255, 255, 0], [0, 0, 153], [0, 0, 204],
     [255, 51, 153], [0, 204, 204], [0, 51, 0], [255, 153, 51], [0, 204, 0]],
    np.uint8,
)


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


def _meta(keys, sources, rejects, rows, previews) -> dict:
    return {"keys": keys, "sources": sources, "rejects": rejects, "rows": rows, "previews": previews}


def _decode(shard: Shard, size: int, input_spec: Mapping[str, Any], only, resize: bool | None = None):
    return read_and_decode(
        shard,
        size,
        input_spec["resize"] if resize is None else resize,
        input_spec["convert_to_rgb"],
        input_spec["storage_options"],
        input_spec["image_column"],
        input_spec["key_column"],
        only,
        tuple(input_spec.get("formats", DEFAULT_FORMATS)),
    )


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

    def __call__(self, shard: Shard, only: frozenset | None) -> tuple[dict, Any]:
        # Low-resolution inputs are brought to the model's size as the official transform does (bilinear).
        upsample = self.task == "super_resolution" and not self.evaluate
        decoded = _decode(shard, self.size, self.input_spec, only, resize=self.input_spec["resize"] or upsample)
        params = {"evaluate": self.evaluate, **({"seed": self.seed, **self.degradation} if self.evaluate else {})}
        rows = [(i, "", params) for i in range(len(decoded.keys))]
        if self.evaluate:
            degraded = [degrade(self.task, image, key, self.seed, **self.degradation) for image, key in zip(decoded.images, decoded.keys)]
            inputs = np.stack(degraded) if degraded else decoded.images
            payload = {"inputs": inputs, "clean": decoded.images}
            previews = [[clean, bad] for clean, bad in zip(decoded.images[: self.preview_rows], inputs)]
        else:
            payload = {"inputs": decoded.images}
            previews = [[image] for image in decoded.images[: self.preview_rows]]
        return _meta(decoded.keys, decoded.sources, decoded.rejects, rows, previews), payload


@dataclass(frozen=True)
class PrepareTranslate:
    """Read sketches (greyscale in [0, 1]) or label maps (one-hot) as the model's float input."""

    size: int
    input_spec: Mapping[str, Any]
    task: str
    channels: int
    preview_rows: int

    def __call__(self, shard: Shard, only: frozenset | None) -> tuple[dict, Any]:
        spec = self.input_spec
        if only is not None and shard.format == "images":
            shard = dataclasses.replace(shard, records=tuple(r for r in shard.records if r.key in only))
        keys, sources, rejects, inputs = [], [], [], []
        formats = tuple(spec.get("formats", DEFAULT_FORMATS))
        records = read_records(shard, spec["storage_options"], spec["image_column"], spec["key_column"], extensions(formats))
        for key, source, blob in records:
            if only is not None and key not in only:
                continue
            try:
                if isinstance(blob, BaseException):
                    raise ValueError(str(blob))
                if self.task == "sketch_to_face":
                    x = sketch_input(blob, self.size, formats)
                else:
                    x = segmentation_input(blob, self.size, self.channels, formats)
            except Exception as e:  # PIL raises many types for bad data
                message = str(e) if isinstance(e, ValueError) else f"cannot decode: {type(e).__name__}: {e}"
                rejects.append((key, source, message))
                continue
            keys.append(key)
            sources.append(source)
            inputs.append(x)
        stacked = np.stack(inputs) if inputs else np.zeros((0, self.channels, self.size, self.size), np.float32)
        previews = [[self._picture(x)] for x in stacked[: self.preview_rows]]
        rows = [(i, "", {}) for i in range(len(keys))]
        return _meta(keys, sources, rejects, rows, previews), {"inputs": stacked}

    def _picture(self, x: np.ndarray) -> np.ndarray:
        if self.task == "sketch_to_face":
            return np.repeat((x[0] * 255).round().astype(np.uint8)[..., None], 3, axis=2)
        labels = x.argmax(0)
        return _PALETTE[labels % len(_PALETTE)]


@dataclass(frozen=True)
class PrepareEdit:
    """The shard's records (W+ codes from an inversion output, or images to invert), the partner records
    the edit names (styles, pair ends, face-swap sources), and one row per output image."""

    kind: str
    from_latents: bool
    size: int
    input_spec: Mapping[str, Any]
    partners: Mapping[str, Shard]  # key -> the shard holding it, for every key the edit names
    strengths: tuple[float, ...] = ()
    styles: tuple[str, ...] = ()
    pairs: tuple[tuple[str, str], ...] = ()
    steps: int = 0
    paste_fraction: float = 0.5
    preview_rows: int = 0

    def __call__(self, shard: Shard, only: frozenset | None) -> tuple[dict, Any]:
        wanted = self._wanted(only)
        keys, sources, rejects, values = self._read(shard, wanted)
        needed = self._partner_keys(keys)
        partner_values, partner_errors = self._read_partners(needed)
        rows, plan = [], []
        partner_index = {k: j for j, k in enumerate(partner_values)}
        kept = []
        for i, key in enumerate(keys):
            edits = self._edits(key)
            broken = [p for _, p, _ in edits if p is not None and p not in partner_values]
            if broken:
                rejects.append((key, sources[i], f"record {broken[0]!r}, which this edit pairs it with, was rejected: "
                                                  f"{partner_errors.get(broken[0], 'not found')}"))
                continue
            r = len(kept)
            kept.append(i)
            for variant, partner, value in edits:
                rows.append((r, variant, self._params(partner, value)))
                plan.append((r, -1 if partner is None else partner_index[partner], value))
        keys, sources = [keys[i] for i in kept], [sources[i] for i in kept]
        values = values[kept] if len(kept) else values[:0]
        partners = np.stack(list(partner_values.values())) if partner_values else values[:0]
        meta = _meta(keys, sources, rejects, rows, [])
        if self.kind == "face_swap":  # one pasted image per row: a target may take several sources
            targets = values[[r for r, _, _ in plan]] if plan else values[:0]
            donors = partners[[j for _, j, _ in plan]] if plan else values[:0]
            channels_first = lambda a: torch.as_tensor(a).permute(0, 3, 1, 2)  # noqa: E731
            pasted = paste_center(channels_first(donors), channels_first(targets), self.paste_fraction)
            pasted = pasted.permute(0, 2, 3, 1).contiguous().numpy()
            firsts = {}
            for (r, _, _), target, donor, paste in zip(plan, targets, donors, pasted):
                firsts.setdefault(r, [target, donor, paste])
            meta["previews"] = [firsts[r] for r in sorted(firsts)][: self.preview_rows]
            return meta, {"images": pasted, "plan": plan}
        if not self.from_latents:
            meta["previews"] = [[v] for v in values[: self.preview_rows]]
        field = "codes" if self.from_latents else "images"
        return meta, {field: values, f"partner_{field}": partners, "plan": plan}

    def _wanted(self, only: frozenset | None) -> frozenset | None:
        """Keys of the shard this edit makes rows for (None: all)."""
        if self.kind == "interpolation":
            firsts = frozenset(start for start, _ in self.pairs)
        elif self.kind == "face_swap":
            firsts = frozenset(target for _, target in self.pairs)
        else:
            return only
        return firsts if only is None else firsts & only

    def _edits(self, key: str) -> list[tuple[str, str | None, Any]]:
        """(variant name, partner key, value) of each output of a record."""
        if self.kind == "direction":
            return [(f"s{s:+g}", None, s) for s in self.strengths]
        if self.kind == "mixing":
            return [(f"mix-{style}", style, None) for style in self.styles]
        if self.kind == "interpolation":
            return [(f"to-{end}-{k}", end, k) for start, end in self.pairs if start == key for k in range(self.steps + 2)]
        return [(f"from-{source}", source, None) for source, target in self.pairs if target == key]

    def _params(self, partner: str | None, value: Any) -> dict:
        if self.kind == "direction":
            return {"strength": value}
        if self.kind == "mixing":
            return {"style": partner}
        if self.kind == "interpolation":
            return {"end": partner, "step": value, "t": value / (self.steps + 1)}
        return {"source": partner, "paste_fraction": self.paste_fraction}

    def _partner_keys(self, keys: list[str]) -> list[str]:
        present = set(keys)
        if self.kind == "mixing":
            return list(self.styles) if present else []
        if self.kind == "interpolation":
            return sorted({end for start, end in self.pairs if start in present})
        if self.kind == "face_swap":
            return sorted({source for source, target in self.pairs if target in present})
        return []

    def _read(self, shard: Shard, wanted: frozenset | None) -> tuple[list, list, list, np.ndarray]:
        if self.from_latents:
            keys, sources, codes = read_latent_rows(shard.source, self.input_spec["latents_storage_options"], wanted)
            return keys, sources, [], codes
        decoded = _decode(shard, self.size, self.input_spec, wanted)
        return decoded.keys, decoded.sources, decoded.rejects, decoded.images

    def _read_partners(self, keys: list[str]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        values, errors = {}, {}
        by_shard: dict[Shard, set[str]] = {}
        for key in keys:
            by_shard.setdefault(self.partners[key], set()).add(key)
        for shard, wanted in by_shard.items():
            found, _, failed, array = self._read(shard, frozenset(wanted))
            for key, value in zip(found, array):
                values[key] = value
            errors.update({key: error for key, _, error in failed})
        return {k: values[k] for k in keys if k in values}, errors


def read_latent_rows(uri: str, storage_options: Mapping[str, Any], keys: frozenset | None) -> tuple[list, list, np.ndarray]:
    """(keys, sources, W+ float32 [N, num_ws, style_dim]) of an inversion output file, or only ``keys``."""
    fs, path = filesystem(uri, storage_options)
    with fs.open(path, "rb") as f:
        table = pq.read_table(f, columns=["key", "source", LATENT_COLUMN])
    if keys is not None:
        table = table.filter(pc.is_in(table.column("key"), pa.array(sorted(keys), pa.string())))
    column = table.column(LATENT_COLUMN).combine_chunks()
    shape = column.type.shape
    codes = column.to_numpy_ndarray().astype(np.float32) if len(table) else np.zeros((0, *shape), np.float32)
    return table.column("key").to_pylist(), table.column("source").to_pylist(), codes


@dataclass(frozen=True)
class WriteImages:
    """Commit a shard of an application job: its images, its manifest rows, its preview, then its stats."""

    provenance: Mapping[str, Any]
    task: str
    latent_dtype: str
    row_group_size: int
    image_format: str
    quality: int
    preview_rows: int

    def __call__(self, store: OutputStore, shard: Shard, meta: dict, result: dict, started: float, retry: bool) -> dict:
        keys, sources = meta["keys"], meta["sources"]
        names = [image_name(keys[r], variant, self.image_format) for r, variant, _ in meta["rows"]]
        taken = set()
        if retry:  # recovered records must not take the names of the images the shard already has
            folder = f"images/{shard.name}/"
            owned = store.owned_files(shard.name, store.committed_stats(shard.name))
            taken = {path[len(folder) :] for path in owned if path.startswith(folder)}
        unwritable = unwritable_names(meta["rows"], names, keys, taken, len(store.images_dir(shard.name).encode()))
        rejects = meta["rejects"] + [(keys[r], sources[r], reason) for r, reason in sorted(unwritable.items())]
        kept = [i for i, (r, _, _) in enumerate(meta["rows"]) if r not in unwritable]
        rows = [meta["rows"][i] for i in kept]
        names = [names[i] for i in kept]
        images = result["images"][kept]
        columns = {
            "task": ([self.task] * len(rows), pa.string()),
            "params": ([json.dumps(p, sort_keys=True) for _, _, p in rows], pa.string()),
            "image": ([store.image_uri(shard.name, n) for n in names], pa.string()),
        }
        for metric, values in result.get("metrics", {}).items():
            columns[metric] = ([float(values[i]) for i in kept], pa.float64())
        table = manifest_table(
            [keys[r] for r, _, _ in rows],
            [sources[r] for r, _, _ in rows],
            result["codes"][kept],
            dict(self.provenance, shard=shard.name),
            self.latent_dtype,
            columns,
        )
        encoded = {n: encode_image(image, self.image_format, self.quality) for n, image in zip(names, images)}
        if retry:
            return store.retry_rejects(shard.name, table, rejects, self.row_group_size, started, images=encoded)
        preview = self._preview(meta, rows, images)
        return store.write_shard(
            shard.name, table, rejects, self.row_group_size, started, shard_inputs(shard),
            extra={"preview_rows": len(preview)}, images=encoded, preview=contact_sheet(preview) if preview else None,
        )

    def _preview(self, meta: dict, rows: list, images: np.ndarray) -> list[list[np.ndarray]]:
        outputs: dict[int, list[np.ndarray]] = {}
        for (r, _, _), image in zip(rows, images):
            if r < self.preview_rows:
                outputs.setdefault(r, []).append(image)
        previews = meta["previews"]
        return [
            ((previews[r] if r < len(previews) else []) + outputs[r])[:PREVIEW_COLUMNS] for r in sorted(outputs)
        ]
