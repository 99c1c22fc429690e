"""One engine interface over four backends: eager/compiled PyTorch, ONNX Runtime, TensorRT and AOTInductor.

    engine = build_engine("s3://models/e2style.pt", EngineOptions(backend="onnxruntime"), stages=2)
    codes = engine.invert(images)            # the same call and results as load_inverter(...).invert
    recon = engine.synthesize(codes)

Each backend (``engines.backends``) builds runners of the model's graphs (``engines.graphs``: first stage,
refinement stages, synthesis); the engine strings them together in the official order and splits batches
larger than the profile's ``max_batch`` (``engines.runners.GraphModel``, as ``load_inverter`` does). Exported
graphs and TensorRT plans go through an ``EngineCache`` when ``cache_uri`` is set. Before an engine is
returned it passes the accuracy gate against the float32 PyTorch model (unless it is that model), or the
next precision in ``fallback`` is tried; when none passes the build fails with the numbers.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from engines.backends import backend_builder, module_digest
from engines.batching import cached_pick, invert_rate
from engines.cache import EngineCache, device_identity
from engines.checkpoints import CheckpointInfo, load_e2style
from engines.gate import AccuracyGateFailed, GateReport, GateThresholds, gate_batch, run_gate
from engines.graphs import GENERATOR_FORMS
from engines.runners import GraphModel, Runner, ieee_float32, resolve_device
from operators.e2style import E2Style, E2StyleConfig

log = logging.getLogger(__name__)

PRECISIONS = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class EngineOptions:
    backend: str = "torch"
    precision: str = "float32"
    compile: bool = False  # torch: torch.compile the graphs
    cuda_graphs: bool = False  # torch on CUDA: compile with CUDA graphs ("reduce-overhead")
    channels_last: bool = True  # torch: NHWC convolutions (faster with oneDNN and cuDNN)
    min_batch: int = 1  # tensorrt: the dynamic batch profile
    opt_batch: int | None = None  # default: max_batch
    max_batch: int = 64  # every backend: larger batches are run in pieces of this size
    threads: int = 0  # CPU threads for onnxruntime (0: its default)
    cache_uri: str | None = None  # folder or fsspec URI for exported graphs and TensorRT plans
    cache_storage_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    gate: GateThresholds = GateThresholds()
    gate_batch: int = 4
    fallback: tuple[str, ...] = ()  # precisions to try in turn when the gate refuses an engine
    # torch and aoti: how the generator is computed (engines.graphs.GENERATOR_FORMS). "fused" (the generator
    # prepared for inference) is the fastest on CPU (1.56x "grouped", the research code's form, on the
    # official generator: BENCHMARKS.md) and, on CUDA, runs the batched form's convolutions, which have no
    # batch-size cliff where the grouped ones do (11x slower at 64 than at 32 on an H200). The folded forms
    # (4x the products of each upsampling layer) wait for bench_gpu.py to show they pay on a GPU.
    modulation: str = "fused"
    # On CUDA: time the batch sizes of engines.batching.CANDIDATES (up to what fits) once, keep the fastest
    # as max_batch and cache the verdict; the built engine's options carry the choice, with this off.
    pick_batch: bool = False

    def __post_init__(self):
        backend_builder(self.backend)  # refuses an unknown backend, naming the known ones
        for precision in (self.precision, *self.fallback):
            if precision not in PRECISIONS:
                raise ValueError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
        if self.backend == "onnxruntime" and self.precision != "float32":
            raise ValueError("the onnxruntime backend runs float32 only; use tensorrt or torch for reduced precision")
        if self.opt_batch is None:
            object.__setattr__(self, "opt_batch", self.max_batch)
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(
                f"batch profile must satisfy 1 <= min_batch <= opt_batch <= max_batch, "
                f"got {self.min_batch}, {self.opt_batch}, {self.max_batch}"
            )
        if self.cuda_graphs and not self.compile:
            raise ValueError("cuda_graphs needs compile: true (CUDA graphs come from torch.compile)")
        if self.modulation not in GENERATOR_FORMS:
            raise ValueError(f"unknown generator form {self.modulation!r}; known: {', '.join(GENERATOR_FORMS)}")

    @property
    def name(self) -> str:
        extra = " compiled" if self.compile else ""
        return f"{self.backend} {self.precision}{extra}"

    @property
    def thresholds(self) -> GateThresholds:
        return self.gate.resolved(self.precision)

    @property
    def is_reference(self) -> bool:
        """Eager float32 PyTorch in the research code's arithmetic: the model the gate compares with."""
        return self.backend == "torch" and self.precision == "float32" and not self.compile and self.modulation == "grouped"


class Engine(GraphModel):
    """An E2Style model behind one backend: an ``InversionModel`` like ``load_inverter``'s, float32 in and out."""

    def __init__(
        self,
        config: E2StyleConfig,
        stages: int,
        info: CheckpointInfo,
        device: torch.device,
        options: EngineOptions,
        runners: dict[str, Runner],
    ):
        super().__init__(config, stages, info, device, runners)
        self.options = options
        self.gate_report: GateReport | None = None

    @property
    def name(self) -> str:
        return self.options.name

    @property
    def max_batch(self) -> int:
        return self.options.max_batch


def build_engine(
    uri: str,
    options: EngineOptions = EngineOptions(),
    stages: int | None = None,
    device: str | torch.device = "cpu",
    storage_options: Mapping[str, Any] | None = None,
    config: E2StyleConfig | None = None,
    gate: bool = True,
) -> Engine:
    """Load an official checkpoint and build the engine ``options`` describe, gated against float32.

    ``gate=False`` skips the comparison, for workers whose engine was already gated where it was built.
    With ``cache_uri``, a verdict that passed is kept in the engine cache (keyed by the weights, the
    options, the device kind, torch and the code that computes the engine), so a rebuild does not gate again.
    """
    dev = resolve_device(device)
    if options.backend == "tensorrt" and dev.type != "cuda":
        raise ValueError("the tensorrt backend needs a CUDA device (resources.num_gpus_per_actor > 0)")
    model, info = load_e2style(uri, stages=stages, config=config, storage_options=storage_options)
    model = model.to(dev).eval()
    weights = _Digest(model)
    precisions = [options.precision, *options.fallback]
    for i, precision in enumerate(precisions):
        candidate = dataclasses.replace(options, precision=precision, fallback=())
        engine = _build(model, info, candidate, dev)
        if not gate or (candidate.is_reference and model.decoder.config.modulation == "grouped"):
            return choose_batch(engine, model, digest=weights) if dev.type == "cuda" else engine
        report = gate_verdict(engine, model, candidate, weights)
        engine.gate_report = report
        if report.passed:
            log.info(report.describe())
            return choose_batch(engine, model, digest=weights) if dev.type == "cuda" else engine
        if i + 1 == len(precisions):
            raise AccuracyGateFailed(report)
        log.warning("%s; falling back to %s", report.describe(), precisions[i + 1])


class _Digest:
    """The model's weights digest, computed the first time a cache key needs it (about 1 s per GB)."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.value = model, None

    def __call__(self) -> str:
        if self.value is None:
            self.value = module_digest(self.model)
        return self.value


def gate_verdict(engine: Engine, model: E2Style, options: EngineOptions, weights: Callable[[], str]) -> GateReport:
    """The gate's verdict on ``engine``: from the engine cache when the same engine of the same weights
    passed it on this kind of device before, else measured now (and kept there when it passed)."""
    if not options.cache_uri:
        return check_engine(engine, model, options)
    cache = EngineCache(options.cache_uri, options.cache_storage_options)
    kept = {"backend", "precision", "compile", "cuda_graphs", "channels_last", "modulation", "min_batch",
            "opt_batch", "max_batch", "gate", "gate_batch"}
    fields = {
        "kind": "gate",
        **device_identity(engine.device),
        "torch": torch.__version__,
        "code_sha256": engine_code_digest(),
        "options": {k: v for k, v in dataclasses.asdict(options).items() if k in kept},
        "thresholds": dataclasses.asdict(options.thresholds),
        "stages": engine.stages,
        "weights_sha256": weights(),
    }
    data = cache.get(fields)
    if data is not None:
        log.info("gate verdict of %s from the engine cache", options.name)
        return GateReport.from_json(data)
    report = check_engine(engine, model, options)
    if report.passed:
        cache.put(fields, report.to_json())
    return report


@functools.cache
def engine_code_digest() -> str:
    """sha256 of the source of every module that decides what an engine computes, so that a verdict kept
    by other code is never reused."""
    import engines
    import operators

    digest = hashlib.sha256()
    for package in (operators, engines):
        for path in sorted(Path(next(iter(package.__path__))).rglob("*.py")):
            digest.update(path.read_bytes())
    return digest.hexdigest()


def choose_batch(
    engine: Engine, model: E2Style, measure: Callable[[int], float] | None = None, digest: Callable[[], str] | None = None
) -> Engine:
    """With ``pick_batch``: the engine with the fastest batch of its device as ``max_batch`` (cached)."""
    options = engine.options
    if not options.pick_batch or options.backend != "torch":  # exported graphs and plans fix their batch range
        return engine
    device = engine.device
    fields = {
        **device_identity(device),
        "torch": torch.__version__,
        "precision": options.precision,
        "modulation": options.modulation,
        "compile": options.compile,
        "cuda_graphs": options.cuda_graphs,
        "stages": engine.stages,
        "weights_sha256": (digest or _Digest(model))(),
    }
    cache = EngineCache(options.cache_uri, options.cache_storage_options) if options.cache_uri else None
    batch, rates, hit = cached_pick(cache, fields, measure or (lambda b: invert_rate(engine, b)))
    log.info(
        "batch %d chosen for %s (%s images/s by batch%s)", batch, options.name,
        ", ".join(f"{b}: {r:.0f}" for b, r in sorted(rates.items())), ", from the engine cache" if hit else "",
    )
    engine.options = dataclasses.replace(
        options, pick_batch=False, max_batch=batch, opt_batch=min(options.opt_batch, batch),
        min_batch=min(options.min_batch, batch),
    )
    return engine


def check_engine(engine: Engine, model: E2Style, options: EngineOptions) -> GateReport:
    """Run the gate batch through the engine and through the float32 PyTorch model, stage by stage."""
    cfg = model.config
    x = gate_batch(options.gate_batch, cfg.input_channels, cfg.image_size).to(engine.device)
    with torch.inference_mode(), ieee_float32(engine.device):
        reference = model.invert(x, stages=engine.stages)
        candidate = engine.invert(x, all_stages=True)
        return run_gate(options.name, options.thresholds, reference, candidate, model.synthesize, engine.synthesize)


def _build(model: E2Style, info: CheckpointInfo, options: EngineOptions, device: torch.device) -> Engine:
    stages = model.config.stages  # load_e2style builds the stages asked for
    runners = backend_builder(options.backend)(model, stages, options, device)
    return Engine(model.config, stages, info, device, options, runners)
