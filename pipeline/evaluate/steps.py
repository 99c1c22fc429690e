"""The evaluation job's CPU steps and what they share with the model step and the report: decoding a shard
before the model, committing its scores after it, and the choice of the records that may make a
best/worst contact sheet. Workers running these steps never import torch or the model code.

A shard's rows: per engine (the job's first, then each of ``evaluate.precisions``), one row per record:
``key``, ``source``, ``w_plus`` (the final stage's codes), ``engine``, ``device``, per scored stage k
``<metric>_stage<k>`` (float64) and ``seconds_stage<k>``, and with FID the Inception pool3 features
``fid_input`` and ``fid_stage<k>`` (2048 float32 each). With ``evaluate.edit``, per strength i (its index
in ``strengths``) ``identity_edit<i>`` and ``fid_edit<i>``: the job's engine's edited images against the
input; NaN in the rows of the compared precisions, which are not edited.

The shard's preview holds, one row each (input, then each scored stage), the records that may be among the
best or worst of the whole output: the ``best_worst`` best and worst of the shard by each ranking metric
at the last scored stage, ranked by ``sheet_records`` from the shard's own rows, so the report finds
every record's row of pictures again from the rows alone.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
from PIL import Image

from pipeline.core.images import contact_sheet
from pipeline.core.payloads import Prepared, Provenance, ShardStats
from pipeline.core.shards import Shard, shard_inputs
from pipeline.core.store import PREVIEW_GAP, PREVIEW_TILE, OutputStore, manifest_table

RANKINGS = ("identity", "psnr")  # what the contact sheets rank by, when computed; higher is better for both
FEATURE_PREFIX = "fid_"  # the columns of Inception features (FID), not scores


def score_column(metric: str, stage: int) -> str:
    return f"{metric}_stage{stage}"


def seconds_column(stage: int) -> str:
    return f"seconds_stage{stage}"


def edit_column(metric: str, index: int) -> str:
    """identity similarity or FID features of the edit by the ``index``-th of ``evaluate.edit.strengths``."""
    return f"{metric}_edit{index}"


def feature_column(stage: int | None) -> str:
    """The FID features of the input (``None``) or of a stage's reconstruction."""
    return f"{FEATURE_PREFIX}input" if stage is None else f"{FEATURE_PREFIX}stage{stage}"


@dataclass(frozen=True)
class Evaluated:
    """The model step's result on (a part of) a shard's records."""

    engines: tuple[str, ...]  # the job's engine, then each compared precision's
    codes: tuple[np.ndarray, ...]  # per engine: the final stage's W+ codes, float32 [records, num_ws, style_dim]
    scores: tuple[dict[str, np.ndarray], ...]  # per engine, by column: float64 [records], features float32 [records, D]
    devices: tuple[str, ...]  # per record: where it was run
    pictures: dict[int, list[np.ndarray]]  # record index -> input and each scored stage's image (the job's engine)


def join_evaluated(parts: list[Evaluated]) -> Evaluated:
    """The results of a payload's parts, in order, as one."""
    offsets = np.cumsum([0] + [len(p.devices) for p in parts])
    first = parts[0]
    return Evaluated(
        first.engines,
        tuple(np.concatenate([p.codes[e] for p in parts]) for e in range(len(first.engines))),
        tuple({c: np.concatenate([p.scores[e][c] for p in parts]) for c in cols} for e, cols in enumerate(first.scores)),
        tuple(d for p in parts for d in p.devices),
        {int(offset) + i: images for p, offset in zip(parts, offsets) for i, images in p.pictures.items()},
    )


def ranked(keys: Sequence[str], values: np.ndarray, count: int) -> tuple[list[str], list[str]]:
    """(best, worst): the ``count`` keys of the highest values, highest first, and of the lowest, lowest
    first; equal values are ordered by key and NaN is never ranked."""
    order = sorted((i for i in range(len(keys)) if not np.isnan(values[i])), key=lambda i: (values[i], keys[i]))
    return [keys[i] for i in reversed(order[len(order) - min(count, len(order)) :])], [keys[i] for i in order[:count]]


def sheet_records(
    keys: Sequence[str], columns: Mapping[str, np.ndarray], rankings: Sequence[str], stage: int, count: int
) -> list[str]:
    """The keys, sorted, of the records among the ``count`` best or worst by any of ``rankings`` at ``stage``:
    the rows of a shard's preview, or (over every shard) the records of the output's contact sheets."""
    chosen: set[str] = set()
    for metric in rankings:
        best, worst = ranked(keys, np.asarray(columns[score_column(metric, stage)]), count)
        chosen.update(best, worst)
    return sorted(chosen)


def shortlist(values: Sequence[np.ndarray], count: int) -> np.ndarray:
    """Which records may be among the ``count`` best or worst by any of ``values`` (one array per ranking)
    whatever their keys: every record whose value reaches the ``count``-th highest or lowest, ties
    included. The model step keeps the pictures of these alone."""
    keep = np.zeros(len(values[0]) if values else 0, bool)
    for v in values:
        known = np.sort(v[~np.isnan(v)])
        if count and len(known):
            k = min(count, len(known))
            keep |= (v <= known[k - 1]) | (v >= known[-k])
    return keep


def preview_pictures(preview: bytes, rows: int, columns: int) -> list[list[np.ndarray]]:
    """The pictures of a preview written by ``contact_sheet``: ``rows`` rows of ``columns`` tiles."""
    with Image.open(io.BytesIO(preview)) as sheet:
        pixels = np.asarray(sheet.convert("RGB"))
    step = PREVIEW_TILE + PREVIEW_GAP
    return [
        [np.ascontiguousarray(pixels[top : top + PREVIEW_TILE, left : left + PREVIEW_TILE])
         for left in range(PREVIEW_GAP, PREVIEW_GAP + columns * step, step)]
        for top in range(PREVIEW_GAP, PREVIEW_GAP + rows * step, step)
    ]


@dataclass(frozen=True)
class WriteEvaluation:
    """Commit a shard of scores: its rows, its rejects, the preview of its best and worst, then its stats."""

    provenance: Provenance  # its engine is the job's, which the previews and the report rank
    latent_dtype: str
    row_group_size: int
    stages: tuple[int, ...]
    rankings: tuple[str, ...]
    best_worst: int

    def __call__(
        self, store: OutputStore, shard: Shard, meta: Prepared, result: Evaluated, started: float, retry: bool
    ) -> ShardStats:
        table = self._table(shard, meta, result)
        if retry:
            previous = store.read_latents(shard.name)
            stats = store.committed_stats(shard.name)
            old = self._preview_pictures(store, shard.name, previous, stats.preview_rows or 0)
            new = {meta.keys[i]: images for i, images in result.pictures.items()}
            ranked_columns = ["key", "engine", *(score_column(m, self.stages[-1]) for m in self.rankings)]
            both = pa.concat_tables([previous.select(ranked_columns), table.select(ranked_columns)])
            sheet = self._preview(both, {**old, **new})
            return store.retry_rejects(
                shard.name, table, meta.rejects, self.row_group_size, started,
                preview=contact_sheet(sheet) if sheet else None, preview_rows=len(sheet) or None,
            )
        sheet = self._preview(table, {meta.keys[i]: images for i, images in result.pictures.items()})
        return store.write_shard(
            shard.name, table, meta.rejects, self.row_group_size, started, shard_inputs(shard),
            preview=contact_sheet(sheet) if sheet else None, preview_rows=len(sheet) or None,
        )

    def _table(self, shard: Shard, meta: Prepared, result: Evaluated) -> pa.Table:
        if result.engines[0] != self.provenance.engine:
            raise RuntimeError(f"the model step ran {result.engines[0]!r}, not the job's {self.provenance.engine!r}")
        engines = len(result.engines)
        scalars = [c for c, v in result.scores[0].items() if v.ndim == 1]
        features = [c for c, v in result.scores[0].items() if v.ndim == 2]
        columns = {
            "engine": ([name for name in result.engines for _ in meta.keys], pa.string()),
            "device": (list(result.devices) * engines, pa.string()),
            **{c: (np.concatenate([s[c] for s in result.scores]).astype(np.float64), pa.float64()) for c in scalars},
        }
        table = manifest_table(
            list(meta.keys) * engines,
            list(meta.sources) * engines,
            np.concatenate(result.codes),
            self.provenance.to_json(shard=shard.name),
            self.latent_dtype,
            columns,
        )
        for column in features:
            values = np.concatenate([s[column] for s in result.scores]).astype(np.float32)
            kind = pa.list_(pa.field("element", pa.float32(), nullable=False), values.shape[1])
            flat = pa.array(values.reshape(-1), pa.float32())
            table = table.append_column(pa.field(column, kind), pa.FixedSizeListArray.from_arrays(flat, type=kind))
        return table

    def _preview(self, rows: pa.Table, pictures: Mapping[str, list[np.ndarray]]) -> list[list[np.ndarray]]:
        """The preview's rows of pictures (input, each scored stage) of the shard's ``sheet_records``."""
        if not self.rankings or not self.best_worst:
            return []
        chosen = self._chosen(rows)
        missing = [key for key in chosen if key not in pictures]
        if missing:  # the model step's shortlist keeps every possible choice: this is a bug, not bad input
            raise RuntimeError(f"no pictures of {len(missing)} of the shard's best and worst, e.g. {missing[0]!r}")
        return [pictures[key] for key in chosen]

    def _chosen(self, rows: pa.Table) -> list[str]:
        """The shard's ``sheet_records``, from its rows of the job's engine."""
        last = self.stages[-1]
        keys, columns = job_engine_rows(rows, self.provenance.engine, [score_column(m, last) for m in self.rankings])
        return sheet_records(keys, columns, self.rankings, last, self.best_worst)

    def _preview_pictures(self, store: OutputStore, shard: str, rows: pa.Table, count: int) -> dict[str, list]:
        """The pictures a committed shard's preview holds, by key (before a retry of its rejects)."""
        if not count:
            return {}
        chosen = self._chosen(rows)
        if len(chosen) != count:
            raise RuntimeError(f"{shard}'s preview holds {count} record(s), but its rows choose {len(chosen)}")
        tiles = preview_pictures(store.fs.cat_file(store.preview_path(shard)), count, 1 + len(self.stages))
        return dict(zip(chosen, tiles))


def job_engine_rows(rows: pa.Table, engine: str, columns: Sequence[str]) -> tuple[list[str], dict[str, np.ndarray]]:
    """The keys and ``columns`` of the rows of the job's ``engine`` (not the compared precisions')."""
    mine = np.asarray(rows.column("engine").to_pylist()) == engine if rows.num_rows else np.zeros(0, bool)
    keys = [k for k, m in zip(rows.column("key").to_pylist(), mine) if m]
    return keys, {c: rows.column(c).to_numpy(zero_copy_only=False)[mine].astype(np.float64) for c in columns}
