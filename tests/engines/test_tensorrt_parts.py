"""The parts of the TensorRT backend that need no GPU: mixed-precision graphs, cache keys, profiles, padding."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper

from engines.cache import cache_key
from engines.engine import EngineOptions
from engines.graphs import export_onnx, model_graphs
from engines.precision import REDUCED_OPS, _converted_initializer, lower_precision
from engines.tensorrt import padded_batch, plan_fields, profile_shapes
from factories import make_e2style


@pytest.fixture(scope="module")
def synthesis_graph():
    model = make_e2style(stages=1, seed=21)
    (module,) = [m for name, m in model_graphs(model, 1, exportable=True) if name == "synthesis"]
    return module, module.example_inputs(2), export_onnx(module, 8)


def tensor_types(model):
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    types.update({init.name: init.data_type for init in inferred.graph.initializer})
    return types


def test_float16_graph_runs_only_the_products_in_half(synthesis_graph):
    import onnxruntime as ort

    module, inputs, graph = synthesis_graph
    lowered = onnx.load_from_string(lower_precision(graph, "float16"))
    types = tensor_types(lowered)
    products = [n for n in lowered.graph.node if n.op_type in REDUCED_OPS]
    assert {n.op_type for n in products} >= {"Conv", "MatMul"}
    for node in products:
        assert all(types[name] == TensorProto.FLOAT16 for name in node.input if name), node.name
    others = [n for n in lowered.graph.node if n.op_type not in REDUCED_OPS | {"Cast"}]
    assert {"ReduceSum", "Pow", "Reciprocal"} <= {n.op_type for n in others}  # the demodulation
    for node in others:
        assert all(types.get(name) != TensorProto.FLOAT16 for name in node.input if name), node.name
    assert [types[i.name] for i in [*lowered.graph.input, *lowered.graph.output]] == [TensorProto.FLOAT] * 2

    session = ort.InferenceSession(lowered.SerializeToString(), providers=["CPUExecutionProvider"])
    (half,) = session.run(None, {k: v.numpy() for k, v in inputs.items()})
    with torch.no_grad():
        full = module(*inputs.values()).numpy()
    error = np.abs(half - full).max()
    assert 1e-6 < error < 5e-3  # it really ran in half precision, and closely


def test_bfloat16_weights_round_to_nearest_even(synthesis_graph):
    values = np.array([1.0, 1 + 2**-8, 1 + 3 * 2**-8, -2.5e-3, 3.0e5], np.float32)
    tensor = _converted_initializer(numpy_helper.from_array(values, "w"), "w_bf16", TensorProto.BFLOAT16)
    expected = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert tensor.data_type == TensorProto.BFLOAT16
    assert np.frombuffer(tensor.raw_data, np.uint16).tolist() == expected.tolist()
    lowered = onnx.load_from_string(lower_precision(synthesis_graph[2], "bfloat16"))
    assert {i.data_type for i in lowered.graph.initializer} >= {TensorProto.BFLOAT16, TensorProto.FLOAT}


def test_plan_cache_key_changes_with_graph_precision_profile_version_and_gpu():
    h100 = {"gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    base = plan_fields("stage1", b"onnx-1", EngineOptions(max_batch=64), "10.9.0", h100)
    assert base["profile"] == [1, 64, 64] and base["precision"] == "float32"
    variants = [
        plan_fields("stage1", b"onnx-2", EngineOptions(max_batch=64), "10.9.0", h100),
        plan_fields("stage1", b"onnx-1", EngineOptions(max_batch=64, precision="float16"), "10.9.0", h100),
        plan_fields("stage1", b"onnx-1", EngineOptions(max_batch=64, opt_batch=32), "10.9.0", h100),
        plan_fields("stage1", b"onnx-1", EngineOptions(max_batch=64), "10.10.0", h100),
        plan_fields("stage1", b"onnx-1", EngineOptions(max_batch=64), "10.9.0", {**h100, "gpu": "NVIDIA H200"}),
        plan_fields("stage2", b"onnx-1", EngineOptions(max_batch=64), "10.9.0", h100),
    ]
    keys = {cache_key(f) for f in variants}
    assert len(keys) == len(variants) and cache_key(base) not in keys
    assert cache_key(base) == cache_key(plan_fields("stage1", b"onnx-1", EngineOptions(max_batch=64), "10.9.0", h100))


def test_profile_shapes_and_padding():
    options = EngineOptions(min_batch=4, opt_batch=16, max_batch=32)
    assert profile_shapes((3, 256, 256), options) == ((4, 3, 256, 256), (16, 3, 256, 256), (32, 3, 256, 256))
    with pytest.raises(ValueError, match=r"only the batch axis may be dynamic, got an input of shape \[batch, -1, 256\]"):
        profile_shapes((-1, 256), options)
    x = torch.arange(6.0).view(2, 3)
    padded, real = padded_batch({"codes": x}, 4)
    assert real == 2 and padded["codes"].tolist() == [[0, 1, 2], [3, 4, 5], [3, 4, 5], [3, 4, 5]]
    same, real = padded_batch({"codes": x}, 1)
    assert real == 2 and same["codes"] is x
