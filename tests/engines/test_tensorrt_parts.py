"""The parts of the TensorRT backend that need no GPU: precision rule, cache keys, profiles, padding."""

import pytest
import torch

from engines.cache import cache_key
from engines.engine import EngineOptions
from engines.tensorrt import keeps_float32, padded_batch, plan_fields, profile_shapes


@pytest.mark.parametrize(
    "layer,op,expected",
    [
        ("REDUCE", None, True),  # demodulation sums, squeeze-excite means
        ("UNARY", "SQRT", True),
        ("UNARY", "RECIP", True),
        ("UNARY", "ABS", False),
        ("ELEMENTWISE", "POW", True),
        ("ELEMENTWISE", "DIV", True),
        ("ELEMENTWISE", "SUM", False),
        ("ELEMENTWISE", "PROD", False),
        ("CONVOLUTION", None, False),
        ("MATRIX_MULTIPLY", None, False),
        ("ACTIVATION", None, False),
    ],
)
def test_which_layers_stay_float32(layer, op, expected):
    assert keeps_float32(layer, op) is expected


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
