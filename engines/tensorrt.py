"""TensorRT engines built from the exported ONNX graphs: a dynamic batch profile, FP16 or BF16 with the
numerically delicate layers kept in float32, a timing cache, and plans stored in the ``EngineCache``.

Plans are specific to the TensorRT version and the GPU, so both are part of the cache key; a plan from
another version or GPU is a miss and is rebuilt, never deserialized.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import torch

from engines.cache import EngineCache

if TYPE_CHECKING:
    from engines.engine import EngineOptions, Runner

# Bumped when keeps_float32 changes, so plans built under the old rule are misses.
PRECISION_RULE_VERSION = 1
WORKSPACE_BYTES = 8 << 30

# Layers that stay float32 under FP16/BF16: reductions (the demodulation sums, squeeze-excite means),
# square roots and reciprocals, powers and divisions. Their inputs are sums of many squares whose
# range and rounding half precision handles badly; the convolutions and GEMMs around them carry the
# cost and run in reduced precision.
FLOAT32_LAYER_TYPES = {"REDUCE", "NORMALIZATION", "SOFTMAX"}
FLOAT32_UNARY_OPS = {"SQRT", "RECIP", "EXP", "LOG"}
FLOAT32_ELEMENTWISE_OPS = {"POW", "DIV"}


def keeps_float32(layer_type: str, op: str | None) -> bool:
    """Whether a layer (its TensorRT LayerType name, and its op for unary/elementwise) stays float32."""
    if layer_type in FLOAT32_LAYER_TYPES:
        return True
    if layer_type == "UNARY":
        return op in FLOAT32_UNARY_OPS
    if layer_type == "ELEMENTWISE":
        return op in FLOAT32_ELEMENTWISE_OPS
    return False


def gpu_identity(device: torch.device) -> dict[str, str]:
    major, minor = torch.cuda.get_device_capability(device)
    return {"gpu": torch.cuda.get_device_name(device), "compute_capability": f"{major}.{minor}"}


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
    """(serialized plan, updated timing cache) for one graph."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse the exported graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if options.precision == "float32":
        config.clear_flag(trt.BuilderFlag.TF32)  # float32 means IEEE float32, as the reference
    else:
        config.set_flag(trt.BuilderFlag.FP16 if options.precision == "float16" else trt.BuilderFlag.BF16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if keeps_float32(layer.type.name, _layer_op(trt, layer)):
                layer.precision = trt.float32
                for j in range(layer.num_outputs):
                    if layer.get_output(j).dtype in (trt.float32, trt.float16, trt.bfloat16):
                        layer.set_output_type(j, trt.float32)
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


def _layer_op(trt: Any, layer: Any) -> str | None:
    kind = layer.type.name
    if kind == "UNARY":
        layer.__class__ = trt.IUnaryLayer
        return layer.op.name
    if kind == "ELEMENTWISE":
        layer.__class__ = trt.IElementWiseLayer
        return layer.op.name
    return None


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


def tensorrt_runners(options: "EngineOptions", device: torch.device, graphs: dict[str, bytes]) -> dict[str, "Runner"]:
    try:
        import tensorrt as trt
    except ImportError as e:
        raise ValueError("the tensorrt backend needs the tensorrt package: pip install -e '.[tensorrt]'") from e
    gpu = gpu_identity(device)
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
