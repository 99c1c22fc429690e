"""The engine backends by name: each builds a runner per graph of a model (``engines.runners``) as
``EngineOptions`` ask. A name that is not in ``BUILDERS`` is refused with the known ones."""

from __future__ import annotations

import copy
import hashlib
import importlib
from types import MappingProxyType
from typing import TYPE_CHECKING, Callable, Mapping

import torch

from engines.cache import EngineCache
from engines.graphs import FUSED_FORMS, OPSET, export_onnx, model_graphs
from engines.runners import Runner, eager_runner
from operators.e2style import E2Style

if TYPE_CHECKING:
    from engines.engine import EngineOptions

AUTOCAST_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}  # None: no autocast
# Bumped whenever engines/graphs.py changes what it exports, so cached graphs of older code are misses.
GRAPH_VERSION = 1

Builder = Callable[[E2Style, int, "EngineOptions", torch.device], dict[str, Runner]]


def torch_runners(model: E2Style, stages: int, options: "EngineOptions", device: torch.device) -> dict[str, Runner]:
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
        runners[name] = eager_runner(module, device, None if fused else dtype, layout)
    return runners


def module_digest(module: torch.nn.Module) -> str:
    """sha256 of a graph module's class, weights and buffers: what its exported graph is made from."""
    digest = hashlib.sha256(type(module).__name__.encode())
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{list(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def exported_graphs(model: E2Style, stages: int, options: "EngineOptions") -> dict[str, bytes]:
    """ONNX bytes of each graph, from the cache when ``cache_uri`` is set."""
    cache = EngineCache(options.cache_uri, options.cache_storage_options) if options.cache_uri else None
    graphs = {}
    for name, module in model_graphs(model, stages, exportable=True):
        module = module.cpu()

        def export(module=module) -> bytes:
            return export_onnx(module, options.max_batch)

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


def onnxruntime_runners(
    model: E2Style, stages: int, options: "EngineOptions", device: torch.device
) -> dict[str, Runner]:
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
    for name, graph in exported_graphs(model, stages, options).items():
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


def _imported(module: str, name: str) -> Builder:
    """The builder ``name`` of ``module``, imported on first use: the module imports this one."""

    def build(model: E2Style, stages: int, options: "EngineOptions", device: torch.device) -> dict[str, Runner]:
        return getattr(importlib.import_module(module), name)(model, stages, options, device)

    return build


BUILDERS: Mapping[str, Builder] = MappingProxyType({
    "torch": torch_runners,
    "onnxruntime": onnxruntime_runners,
    "tensorrt": _imported("engines.tensorrt", "tensorrt_runners"),
    "aoti": _imported("engines.aoti", "aoti_runners"),
})
BACKENDS = tuple(BUILDERS)


def backend_builder(name: str) -> Builder:
    """The builder of backend ``name``; an unknown name is a ValueError naming the known ones."""
    try:
        return BUILDERS[name]
    except KeyError:
        raise ValueError(f"unknown engine backend {name!r}; known: {', '.join(BACKENDS)}") from None
