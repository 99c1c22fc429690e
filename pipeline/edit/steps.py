"""The editing job's CPU step: the shard's records (W+ codes from an inversion output, or images to invert),
the partner records the edit names, and one row per output image (with ``plan``: record index, partner
index, value per row)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from operators.edits import paste_center
from pipeline.core.decode import decode_shard
from pipeline.core.payloads import Prepared
from pipeline.core.shards import Shard
from pipeline.core.storage import filesystem
from pipeline.core.store import LATENT_COLUMN, latent_codes
from pipeline.edit.kinds import edit_kind
from pipeline.edit.spec import EditSectionSpec


@dataclass(frozen=True)
class PrepareEdit:
    """The shard's records (W+ codes from an inversion output, or images to invert), the partner records
    the edit names (styles, pair ends, face-swap sources), and one row per output image."""

    edit: EditSectionSpec
    from_latents: bool
    size: int
    input_spec: Mapping[str, Any]
    partners: Mapping[str, Shard]  # key -> the shard holding it, for every key the edit names
    preview_rows: int = 0

    def __call__(self, shard: Shard, only: frozenset | None) -> tuple[Prepared, Any]:
        kind = edit_kind(self.edit.kind)
        wanted = kind.records(self.edit)
        if only is not None:
            wanted = only if wanted is None else wanted & only
        keys, sources, rejects, values = self._read(shard, wanted)
        needed = kind.partners(self.edit, set(keys))
        partner_values, partner_errors = self._read_partners(needed)
        rows, plan = [], []
        partner_index = {k: j for j, k in enumerate(partner_values)}
        kept = []
        for i, key in enumerate(keys):
            edits = kind.outputs(self.edit, key)
            broken = [p for _, p, _ in edits if p is not None and p not in partner_values]
            if broken:
                rejects.append((key, sources[i], f"record {broken[0]!r}, which this edit pairs it with, was rejected: "
                                                  f"{partner_errors.get(broken[0], 'not found')}"))
                continue
            r = len(kept)
            kept.append(i)
            for variant, partner, value in edits:
                rows.append((r, variant, kind.params(self.edit, partner, value)))
                plan.append((r, -1 if partner is None else partner_index[partner], value))
        keys, sources = [keys[i] for i in kept], [sources[i] for i in kept]
        values = values[kept] if len(kept) else values[:0]
        partners = np.stack(list(partner_values.values())) if partner_values else values[:0]
        if kind.pastes_images:  # one pasted image per row: a target may take several sources
            targets = values[[r for r, _, _ in plan]] if plan else values[:0]
            donors = partners[[j for _, j, _ in plan]] if plan else values[:0]
            channels_first = lambda a: torch.as_tensor(a).permute(0, 3, 1, 2)  # noqa: E731
            pasted = paste_center(channels_first(donors), channels_first(targets), self.edit.paste_fraction)
            pasted = pasted.permute(0, 2, 3, 1).contiguous().numpy()
            firsts = {}
            for (r, _, _), target, donor, paste in zip(plan, targets, donors, pasted):
                firsts.setdefault(r, [target, donor, paste])
            previews = [firsts[r] for r in sorted(firsts)][: self.preview_rows]
            titles = ("target", "source", "pasted")
            return Prepared(keys, sources, rejects, rows, previews, titles), {"images": pasted, "plan": plan}
        previews = [] if self.from_latents else [[v] for v in values[: self.preview_rows]]
        field = "codes" if self.from_latents else "images"
        return Prepared(keys, sources, rejects, rows, previews), {field: values, f"partner_{field}": partners, "plan": plan}

    def _read(self, shard: Shard, wanted: frozenset | None) -> tuple[list, list, list, np.ndarray]:
        if self.from_latents:
            keys, sources, codes = read_latent_rows(shard.source, self.input_spec["latents_storage_options"], wanted)
            return keys, sources, [], codes
        decoded = decode_shard(shard, self.size, self.input_spec, wanted)
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
    """(keys, sources, W+ float32 [N, num_ws, style_dim]) of an inversion output file (of either layout,
    ``store.latent_codes``), or only ``keys``."""
    fs, path = filesystem(uri, storage_options)
    with fs.open(path, "rb") as f:
        table = pq.read_table(f, columns=["key", "source", LATENT_COLUMN])
    if keys is not None:
        table = table.filter(pc.is_in(table.column("key"), pa.array(sorted(keys), pa.string())))
    codes = latent_codes(table).astype(np.float32)
    return table.column("key").to_pylist(), table.column("source").to_pylist(), codes
