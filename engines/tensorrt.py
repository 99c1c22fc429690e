"""TensorRT engines built from the exported ONNX graphs: a dynamic batch profile, FP16 or BF16 for the
convolutions and matrix products with everything else in float32 (``engines.precision``), a timing
cache, and plans stored in the ``EngineCache``.

Networks are strongly typed: TensorRT runs each tensor in the type the graph gives it, so the precision
is decided by the graph, identically on TensorRT 10 and 11 (which dropped the FP16/BF16 builder flags).

Plans are specific to the TensorRT version and the GPU, so both are part of the cache key; a plan from
another version or GPU is a miss and is rebuilt, never deserialized.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import torch

from engines.backends import exported_graphs
from engines.cache import EngineCache, device_identity
from engines.precision import lower_precision
from engines.runners import Runner
from operators.e2style import E2Style

if TYPE_CHECKING:
    from engines.engine import EngineOptions

# Bumped when the reduced-precision rule (engines.precision) changes, so older plans are misses.
PRECISION_RULE_VERSION = 2
WORKSPACE_BYTES = 8 << 30


def plan_fields(graph: str, onnx: bytes, options: "EngineOptions", tensorrt_version: str, gpu: dict[str, str]) -> dict:
    """Everything that makes a plan valid: its cache key fields."""
    return {
        "kind": "tensorrt",
        "graph": graph,
        "onnx_sha256": hashlib.sha256(onnx).hexdigest(),
        "tensorrt": tensorrt_version,
        **gpu,
        "precision": options.precision,
        "profile": [options.min_batch, options.opt_batch, options.max_batch],
        "precision_rule": PRECISION_RULE_VERSION,
    }


def profile_shapes(tail: tuple[int, ...], options: "EngineOptions") -> tuple[tuple[int, ...], ...]:
    """(min, opt, max) shapes of an input whose first axis is the batch."""
    if any(d < 0 for d in tail):
        raise ValueError(f"only the batch axis may be dynamic, got an input of shape [batch, {', '.join(map(str, tail))}]")
    return tuple((b, *tail) for b in (options.min_batch, options.opt_batch, options.max_batch))


def padded_batch(inputs: dict[str, torch.Tensor], min_batch: int) -> tuple[dict[str, torch.Tensor], int]:
    """Inputs padded (by repeating the last row) to the profile's smallest batch, and the real batch."""
    batch = len(next(iter(inputs.values())))
    if batch >= min_batch:
        return inputs, batch
    return {k: torch.cat([t, t[-1:].expand(min_batch - batch, *t.shape[1:])]) for k, t in inputs.items()}, batch


def build_plan(onnx: bytes, options: "EngineOptions", timing_cache: bytes | None) -> tuple[bytes, bytes]:
    """(serialized plan, updated timing cache) for one float32 graph, built in ``options.precision``."""
    import tensorrt as trt

    if options.precision != "float32":
        onnx = lower_precision(onnx, options.precision)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse the exported graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    config.clear_flag(trt.BuilderFlag.TF32)  # float32 tensors mean IEEE float32, as in the reference
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        profile.set_shape(tensor.name, *profile_shapes(tuple(tensor.shape)[1:], options))
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache or b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT could not build a {options.precision} engine (see the log above)")
    return bytes(plan), bytes(cache.serialize())


class TensorRTRunner:
    """Runs one plan on the current CUDA stream; inputs and outputs are float32 torch tensors."""

    def __init__(self, plan: bytes, device: torch.device, min_batch: int):
        import tensorrt as trt

        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise RuntimeError("TensorRT could not deserialize the plan")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        (self.output,) = [n for n in names if n not in self.inputs]
        self.device, self.min_batch = device, min_batch

    def __call__(self, **inputs: torch.Tensor) -> torch.Tensor:
        feeds, batch = padded_batch({n: inputs[n].to(self.device, torch.float32).contiguous() for n in self.inputs}, self.min_batch)
        for name, tensor in feeds.items():
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        out = torch.empty(tuple(self.context.get_tensor_shape(self.output)), dtype=torch.float32, device=self.device)
        self.context.set_tensor_address(self.output, out.data_ptr())
        if not self.context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        return out[:batch]


def tensorrt_runners(model: E2Style, stages: int, options: "EngineOptions", device: torch.device) -> dict[str, Runner]:
    try:
        import tensorrt as trt
    except ImportError as e:
        raise ValueError("the tensorrt backend needs the tensorrt package: pip install -e '.[tensorrt]'") from e
    graphs = exported_graphs(model, stages, options)
    gpu = device_identity(device)
    cache = EngineCache(options.cache_uri, options.cache_storage_options) if options.cache_uri else None
    timing_fields = {"kind": "tensorrt-timing-cache", "tensorrt": trt.__version__, **gpu}
    timing = cache.get(timing_fields) if cache else None
    runners = {}
    for name, onnx in graphs.items():
        fields = plan_fields(name, onnx, options, trt.__version__, gpu)
        plan = cache.get(fields) if cache else None
        if plan is None:
            plan, timing = build_plan(onnx, options, timing)
            if cache:
                cache.put(fields, plan)
                cache.put(timing_fields, timing)
        runners[name] = TensorRTRunner(plan, device, options.min_batch)
    return runners
