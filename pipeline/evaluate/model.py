"""The evaluation job's model step, in the inference actors: every stage's codes and reconstructions, their
scores against the input, and the time each stage takes; with ``evaluate.edit``, the job's engine's last
scored codes moved along a direction by each strength, rendered and scored against the input.

Run time: a stage-k model's time to its codes (stage 1, then for each refinement the reconstruction it
reads and its encoder) plus the rendering of its reconstruction, per image of a batch, measured around
each graph with the device synchronised, as the paper's Table I times 1-, 2- and 3-stage models. The first
batch each engine sees in an actor runs once untimed first (kernel selection, lazy initialisation).
"""

from __future__ import annotations

import dataclasses
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from engines.engine import Engine, build_engine
from engines.metric_weights import load_metric_net
from engines.runners import invert_stages
from operators.edits import apply_direction
from operators.images import images_to_tensor, tensor_to_images
from operators.metric_nets import identity_similarity
from operators.metrics import l2, ms_ssim, psnr, ssim
from pipeline.evaluate.steps import (
    FEATURE_PREFIX, Evaluated, edit_column, feature_column, score_column, seconds_column, shortlist,
)

FID_FEATURES = 2048  # Inception-v3 pool3
PURE_METRICS = {"psnr": psnr, "ssim": ssim, "ms_ssim": ms_ssim, "l2": l2}


@dataclass(frozen=True)
class MetricWeights:
    """Where a network metric's weights are, and the sha256 preflight found them to have."""

    metric: str
    weights: str | tuple[str, ...]
    storage_options: Mapping[str, Any]
    net: str | None
    sha256: str


@dataclass(frozen=True)
class EditDirection:
    """evaluate.edit as preflight loaded it (travelling with the step: the actors score the file whose
    sha256 the provenance records)."""

    direction: np.ndarray = field(compare=False)  # float32 [style_dim] or [num_ws, style_dim]
    strengths: tuple[float, ...]
    layers: tuple[int, ...]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), model)
    threads = torch.get_num_threads()
    return f"CPU {model} ({threads} thread{'s' if threads > 1 else ''})"


def timed_stages(
    engine: Engine, x: torch.Tensor, scored: tuple[int, ...]
) -> tuple[list[torch.Tensor], dict[int, torch.Tensor], dict[int, float]]:
    """Images [B, 3, S, S] on the engine's device -> the codes after each stage, the raw reconstruction of
    each ``scored`` stage, and the seconds a model of k stages takes to make its reconstruction (its codes
    and their rendering) for the whole batch."""
    cuda = engine.device.type == "cuda"
    calls: list[tuple[str, torch.Tensor, float]] = []

    def timed(name: str, runner):
        def run(**inputs: torch.Tensor) -> torch.Tensor:
            if cuda:
                torch.cuda.synchronize(engine.device)
            start = time.perf_counter()
            out = runner(**inputs)
            if cuda:
                torch.cuda.synchronize(engine.device)
            elapsed = time.perf_counter() - start
            # A CUDA-graph engine reuses its output memory on the next call: the reconstructions are kept.
            calls.append((name, out.clone() if name == "synthesis" else out, elapsed))
            return out
        return run

    codes = invert_stages({name: timed(name, r) for name, r in engine.runners.items()}, x, engine.stages)
    if engine.stages in scored:
        timed("synthesis", engine.runners["synthesis"])(codes=codes[-1])
    reached, spent, renders, seconds = {}, 0.0, {}, {}
    stage = 0
    for name, out, elapsed in calls:
        if name == "synthesis":  # the reconstruction of the stage just reached
            renders[stage], seconds[stage] = out, reached[stage] + elapsed
        else:
            stage = int(name.removeprefix("stage"))
        spent += elapsed
        reached.setdefault(stage, spent)
    return codes, {k: renders[k] for k in scored}, {k: seconds[k] for k in scored}


@dataclass(frozen=True)
class EvaluateModel:
    """Score (a part of) a shard's images with the job's engine and one more engine per compared precision.

    The metric networks and the other engines are built once per actor, on the engine's device, the first
    time they are needed (``built``: each actor's own, empty in the copy the driver holds)."""

    metrics: tuple[str, ...]
    stages: tuple[int, ...]
    networks: tuple[MetricWeights, ...]
    precisions: tuple[str, ...]
    checkpoint: str
    storage_options: Mapping[str, Any]
    rankings: tuple[str, ...]
    best_worst: int
    edit: EditDirection | None = None
    built: dict = field(default_factory=dict, compare=False, repr=False)

    def __call__(self, engine: Engine, images: np.ndarray, batch_size: int) -> Evaluated:
        nets = self._networks(engine.device)
        engines = [engine, *self._engines(engine)]
        device = device_name(engine.device)
        step = min(batch_size, engine.max_batch or batch_size)
        chunks: list[list[dict[str, np.ndarray]]] = [[] for _ in engines]
        codes: list[list[np.ndarray]] = [[] for _ in engines]
        pictures: dict[int, list[np.ndarray]] = {}
        for start in range(0, len(images), step):
            batch = images[start : start + step]
            reference = self._reference(batch, engine.device, nets)
            for e, runner in enumerate(engines):
                final, renders, scores = self._score(runner, batch, reference, nets, edits=e == 0)
                codes[e].append(final)
                chunks[e].append(scores)
                if e == 0:
                    pictures.update({start + i: [batch[i], *(r[i] for r in renders)] for i in range(len(batch))})
            pictures = self._keep_possible_choices(pictures, chunks[0])
        cfg = engine.config
        return Evaluated(
            tuple(r.name for r in engines),
            tuple(np.concatenate(c) if c else np.zeros((0, cfg.num_ws, cfg.style_dim), np.float32) for c in codes),
            tuple(self._columns(c) for c in chunks),
            (device,) * len(images),
            pictures,
        )

    def _networks(self, device: torch.device) -> dict[str, torch.nn.Module]:
        if "networks" not in self.built:
            nets = {}
            for source in self.networks:
                net = load_metric_net(source.metric, source.weights, source.storage_options, source.net)
                if net.sha256 != source.sha256:
                    raise RuntimeError(
                        f"metrics.{source.metric}.weights changed since the job started (sha256 {net.sha256}, "
                        f"preflight read {source.sha256})"
                    )
                nets[source.metric] = net.module.to(device)
            self.built["networks"] = nets
        return self.built["networks"]

    def _engines(self, engine: Engine) -> list[Engine]:
        """The engines of the compared precisions: the job's engine's options in another precision, ungated."""
        if "engines" not in self.built:
            self.built["engines"] = [
                build_engine(
                    self.checkpoint, dataclasses.replace(engine.options, precision=p, fallback=()), engine.stages,
                    engine.device, self.storage_options, gate=False,
                )
                for p in self.precisions
            ]
        return self.built["engines"]

    def _reference(self, batch: np.ndarray, device: torch.device, nets: dict) -> dict[str, Any]:
        """What every engine's reconstructions are compared with: the input in [0, 1] (float64 for the
        pure metrics, float32 for the networks), its identity embedding and its FID features."""
        unit = _unit(batch, device)
        reference = {"unit": unit, "unit32": unit.float()}
        with torch.inference_mode():
            if "identity" in nets:
                reference["identity"] = nets["identity"](reference["unit32"])
            if "fid" in nets:
                reference[feature_column(None)] = nets["fid"](reference["unit32"]).float().cpu().numpy()
        return reference

    def _score(self, engine: Engine, batch: np.ndarray, reference: dict, nets: dict, edits: bool):
        x = images_to_tensor(torch.as_tensor(batch)).to(engine.device)
        warm = self.built.setdefault("warm", set())
        if engine.name not in warm:
            timed_stages(engine, x, self.stages)
            warm.add(engine.name)
        codes, raw, seconds = timed_stages(engine, x, self.stages)
        renders = [tensor_to_images(raw[k]).numpy() for k in self.stages]
        scores: dict[str, np.ndarray] = {}
        features: dict[str, np.ndarray] = {}
        if "fid" in self.metrics:
            features[feature_column(None)] = reference[feature_column(None)]
        with torch.inference_mode():
            for k, images in zip(self.stages, renders):
                unit = _unit(images, engine.device)
                for metric in self.metrics:
                    if metric in PURE_METRICS:
                        value = PURE_METRICS[metric](reference["unit"], unit)
                    elif metric == "lpips":
                        value = nets["lpips"](reference["unit32"], unit.float())
                    elif metric == "identity":
                        value = identity_similarity(reference["identity"], nets["identity"](unit.float()))
                    else:
                        features[feature_column(k)] = nets["fid"](unit.float()).float().cpu().numpy()
                        continue
                    scores[score_column(metric, k)] = value.double().cpu().numpy()
                scores[seconds_column(k)] = np.full(len(batch), seconds[k] / len(batch))
        if self.edit is not None:
            last = codes[self.stages[-1] - 1]
            edited = self._edit_scores(engine, last, reference, nets) if edits else self._no_edits(len(batch))
            for column, values in edited.items():
                (features if values.ndim == 2 else scores)[column] = values
        return codes[-1].float().cpu().numpy(), renders, {**scores, **features}

    def _edit_scores(self, engine: Engine, codes: torch.Tensor, reference: dict, nets: dict) -> dict[str, np.ndarray]:
        """Per strength i, the codes moved as the edit job moves them, rendered as the reconstructions are,
        and scored against the input: ``identity_edit<i>`` and the FID features ``fid_edit<i>``."""
        edit = self.edit
        direction = torch.as_tensor(edit.direction)
        out = {}
        with torch.inference_mode():
            for i, strength in enumerate(edit.strengths):
                # To uint8 at once: a CUDA-graph engine reuses its output memory on the next call.
                images = tensor_to_images(engine.synthesize(apply_direction(codes, direction, strength, edit.layers)))
                unit = _unit(images.numpy(), engine.device).float()
                if "identity" in self.metrics:
                    similarity = identity_similarity(reference["identity"], nets["identity"](unit))
                    out[edit_column("identity", i)] = similarity.double().cpu().numpy()
                if "fid" in self.metrics:
                    out[edit_column("fid", i)] = nets["fid"](unit).float().cpu().numpy()
        return out

    def _no_edits(self, records: int) -> dict[str, np.ndarray]:
        """The edit columns of a compared precision's rows, which are not edited: NaN, of the job's
        engine's types (one type per Parquet column)."""
        return {
            column: np.full((records, FID_FEATURES) if column.startswith(FEATURE_PREFIX) else records, np.nan)
            for column in self._edit_column_names()
        }

    def _edit_column_names(self) -> list[str]:
        if self.edit is None:
            return []
        metrics = [m for m in ("identity", "fid") if m in self.metrics]
        return [edit_column(m, i) for m in metrics for i in range(len(self.edit.strengths))]

    def _keep_possible_choices(self, pictures: dict[int, list], chunks: list[dict[str, np.ndarray]]) -> dict[int, list]:
        """The pictures of the records that may still be among the shard's best or worst (a record that is
        not, after some batches, never becomes one: more records only make the bar higher)."""
        if not self.rankings or not self.best_worst:
            return {}
        last = self.stages[-1]
        values = [np.concatenate([c[score_column(m, last)] for c in chunks]) for m in self.rankings]
        keep = shortlist(values, self.best_worst)
        return {i: images for i, images in pictures.items() if keep[i]}

    def _columns(self, chunks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        if chunks:
            return {c: np.concatenate([chunk[c] for chunk in chunks]) for c in chunks[0]}
        return {c: np.zeros((0, FID_FEATURES) if c.startswith(FEATURE_PREFIX) else 0) for c in self._column_names()}

    def _column_names(self) -> list[str]:
        scores = [
            name for k in self.stages
            for name in [*(score_column(m, k) for m in self.metrics if m != "fid"), seconds_column(k)]
        ]
        features = [feature_column(s) for s in (None, *self.stages)] if "fid" in self.metrics else []
        # Scores, then features, in the order ``_score`` gives them.
        return sorted(scores + features + self._edit_column_names(), key=lambda c: c.startswith(FEATURE_PREFIX))


def _unit(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 [N, S, S, 3] -> float64 [N, 3, S, S] on [0, 1] on ``device``: where inputs, reconstructions and
    edits are all scored, the same way."""
    return torch.as_tensor(images).to(device).permute(0, 3, 1, 2).double() / 255
