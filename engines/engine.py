"""One engine interface over three backends: eager/compiled PyTorch, ONNX Runtime and TensorRT.

    engine = build_engine("s3://models/e2style.pt", EngineOptions(backend="onnxruntime"), stages=2)
    codes = engine.invert(images)            # the same call and results as load_inverter(...).invert
    recon = engine.synthesize(codes)

Each backend runs the model's graphs (``engines.graphs``: first stage, refinement stages, synthesis);
the engine strings them together in the official order and splits batches larger than the profile's
``max_batch``. Exported graphs and TensorRT plans go through an ``EngineCache`` when ``cache_uri`` is
set. Before an engine is returned it passes the accuracy gate against the float32 PyTorch model (unless
it is that model), or the next precision in ``fallback`` is tried; when none passes the build fails with
the numbers.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from engines.batching import cached_pick, invert_rate
from engines.cache import EngineCache, device_identity
from engines.checkpoints import CheckpointInfo, load_e2style
from engines.gate import AccuracyGateFailed, GateReport, GateThresholds, gate_batch, run_gate
from engines.graphs import FUSED_FORMS, GENERATOR_FORMS, OUTPUT_NAMES, OPSET, example_inputs, export_onnx, model_graphs
from engines.inverter import _check_batch, _check_codes, ieee_float32, resolve_device
from operators.e2style import E2Style, E2StyleConfig

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "tensorrt", "aoti")
PRECISIONS = ("float32", "bfloat16", "float16")
AUTOCAST_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}  # None: no autocast
# Bumped whenever engines/graphs.py changes what it exports, so cached graphs of older code are misses.
GRAPH_VERSION = 1
Runner = Callable[..., torch.Tensor]  # keyword tensors -> output tensor on the engine's device


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
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown engine backend {self.backend!r}; known: {', '.join(BACKENDS)}")
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


class Engine:
    """An E2Style model behind one backend. Same interface as ``Inverter``: float32 in, float32 out."""

    def __init__(
        self,
        config: E2StyleConfig,
        stages: int,
        info: CheckpointInfo,
        device: torch.device,
        options: EngineOptions,
        runners: dict[str, Runner],
    ):
        self.config, self.stages, self.info, self.device, self.options = config, stages, info, device, options
        self.runners = runners
        self.gate_report: GateReport | None = None

    @property
    def name(self) -> str:
        return self.options.name

    def invert(self, images: torch.Tensor, all_stages: bool = False) -> torch.Tensor | list[torch.Tensor]:
        cfg = self.config
        x = _check_batch(images, cfg.input_channels, cfg.image_size, "images").to(self.device, torch.float32)
        pieces = [self._invert(x[i : i + self.options.max_batch]) for i in range(0, len(x), self.options.max_batch)]
        per_stage = [torch.cat([p[k] for p in pieces]) for k in range(self.stages)]
        return per_stage if all_stages else per_stage[-1]

    def _invert(self, x: torch.Tensor) -> list[torch.Tensor]:
        codes = self.runners["stage1"](images=x)
        per_stage = [codes]
        for k in range(2, self.stages + 1):
            reconstruction = self.runners["synthesis"](codes=codes)
            codes = codes + self.runners[f"stage{k}"](images=x, reconstruction=reconstruction)
            per_stage.append(codes)
        return per_stage

    def synthesize(self, codes: torch.Tensor) -> torch.Tensor:
        ws = _check_codes(codes, self.config.generator).to(self.device, torch.float32)
        step = self.options.max_batch
        return torch.cat([self.runners["synthesis"](codes=ws[i : i + step]) for i in range(0, len(ws), step)])


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
    if options.backend == "torch":
        runners = _torch_runners(model, stages, options, device)
    elif options.backend == "onnxruntime":
        runners = _onnx_runners(model, stages, options, device)
    elif options.backend == "aoti":
        from engines.aoti import aoti_runners

        runners = aoti_runners(model, stages, options, device)
    else:
        from engines.tensorrt import tensorrt_runners

        runners = tensorrt_runners(options, device, _exported(model, stages, options))
    return Engine(model.config, stages, info, device, options, runners)


def _torch_runners(model: E2Style, stages: int, options: EngineOptions, device: torch.device) -> dict[str, Runner]:
    dtype = AUTOCAST_DTYPES[options.precision]
    layout = torch.channels_last if options.channels_last else torch.contiguous_format
    form = options.modulation
    graphs = model_graphs(model, stages, False, form, dtype or torch.float32, options.channels_last)
    runners = {}
    for name, module in graphs:
        fused = name == "synthesis" and form in FUSED_FORMS
        if not options.is_reference and not fused:  # the model itself stays the untouched float32 reference
            module = copy.deepcopy(module)
        if name != "synthesis":  # the generator's 5-d modulated weights have no channels-last form
            module = module.to(device, memory_format=layout)
        if options.compile:
            module = torch.compile(module, mode="reduce-overhead" if options.cuda_graphs else None)
        # A fused generator holds its weights in the engine's dtype already: no autocast casts per call.
        runners[name] = _torch_runner(module, device, None if fused else dtype, layout)
    return runners


def _torch_runner(module, device: torch.device, dtype: torch.dtype | None, layout) -> Runner:
    def run(**inputs: torch.Tensor) -> torch.Tensor:
        args = [t.contiguous(memory_format=layout) if t.ndim == 4 else t for t in inputs.values()]
        autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with torch.inference_mode(), ieee_float32(device), autocast:
            return module(*args).float().contiguous()

    return run


def module_digest(module: torch.nn.Module) -> str:
    """sha256 of a graph module's class, weights and buffers: what its exported graph is made from."""
    digest = hashlib.sha256(type(module).__name__.encode())
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{list(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _exported(model: E2Style, stages: int, options: EngineOptions) -> dict[str, bytes]:
    """ONNX bytes of each graph, from the cache when ``cache_uri`` is set."""
    cache = EngineCache(options.cache_uri, options.cache_storage_options) if options.cache_uri else None
    graphs = {}
    for name, module in model_graphs(model, stages, exportable=True):
        module = module.cpu()
        inputs = example_inputs(name, model, min(2, options.max_batch))
        output = OUTPUT_NAMES.get(name, "codes")

        def export(module=module, inputs=inputs, output=output) -> bytes:
            return export_onnx(module, inputs, output, options.max_batch)

        if cache is None:
            graphs[name] = export()
            continue
        fields = {
            "kind": "onnx",
            "graph": name,
            "weights_sha256": module_digest(module),
            "graph_version": GRAPH_VERSION,
            "opset": OPSET,
            "torch": torch.__version__,
            "max_batch": options.max_batch,
        }
        graphs[name] = cache.get_or_build(fields, export).data
    return graphs


def _onnx_runners(model: E2Style, stages: int, options: EngineOptions, device: torch.device) -> dict[str, Runner]:
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ValueError("this onnxruntime has no CUDA provider (install onnxruntime-gpu), or use backend tensorrt")
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index}))
    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = options.threads
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    cfg = model.config
    runners = {}
    for name, graph in _exported(model, stages, options).items():
        session = ort.InferenceSession(graph, session_options, providers=providers)
        if device.type == "cuda":
            tail = (3, cfg.image_size, cfg.image_size) if name == "synthesis" else (cfg.num_ws, cfg.style_dim)
            runners[name] = _onnx_cuda_runner(session, device, tail)
        else:
            runners[name] = _onnx_runner(session)
    return runners


def _onnx_runner(session) -> Runner:
    def run(**inputs: torch.Tensor) -> torch.Tensor:
        feeds = {name: t.detach().float().numpy() for name, t in inputs.items()}
        (out,) = session.run(None, feeds)
        return torch.from_numpy(out)

    return run


def _onnx_cuda_runner(session, device: torch.device, output_tail: tuple[int, ...]) -> Runner:
    """Inputs and output bound to torch's CUDA memory: no copies through the host."""
    import numpy as np

    output_name = session.get_outputs()[0].name

    def run(**inputs: torch.Tensor) -> torch.Tensor:
        binding = session.io_binding()
        feeds = {name: t.to(device, torch.float32).contiguous() for name, t in inputs.items()}
        for name, t in feeds.items():
            binding.bind_input(name, "cuda", device.index, np.float32, list(t.shape), t.data_ptr())
        batch = len(next(iter(feeds.values())))
        out = torch.empty((batch, *output_tail), dtype=torch.float32, device=device)
        binding.bind_output(output_name, "cuda", device.index, np.float32, list(out.shape), out.data_ptr())
        torch.cuda.current_stream(device).synchronize()  # ONNX Runtime reads on its own stream
        session.run_with_iobinding(binding)
        return out

    return run
