"""Mixed-precision ONNX graphs: the convolutions and matrix products in float16 or bfloat16, the rest in float32.

TensorRT builds these as strongly typed networks, which run every tensor in the type the graph gives it
(the only mode TensorRT 11 has; builder precision flags and per-layer precision hints were removed).
Everything outside the heavy products stays float32: normalisation, the demodulation's sums of squares
and reciprocal square roots, activations, noise, bias and the residual additions, whose range and
rounding half precision handles badly and which cost little. Graph inputs and outputs stay float32.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper, numpy_helper

REDUCED_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}
ONNX_TYPES = {"float16": TensorProto.FLOAT16, "bfloat16": TensorProto.BFLOAT16}


def lower_precision(graph_bytes: bytes, precision: str) -> bytes:
    """The graph with every ``REDUCED_OPS`` node computing in ``precision`` (float16 or bfloat16)."""
    low = ONNX_TYPES[precision]
    model = onnx.load_from_string(graph_bytes)
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    lowered: dict[str, str] = {}  # float32 tensor -> its reduced-precision copy
    nodes = []

    def reduced(name: str) -> str:
        if name in lowered:
            return lowered[name]
        copy = f"{name}__to_{precision}"
        source = initializers.get(name)
        if source is not None and source.data_type == TensorProto.FLOAT:
            graph.initializer.append(_converted_initializer(source, copy, low))
        else:
            nodes.append(helper.make_node("Cast", [name], [copy], to=low, name=f"cast_{copy}"))
        lowered[name] = copy
        return copy

    for node in graph.node:
        if node.op_type in REDUCED_OPS:
            node.input[:] = [reduced(name) if name else name for name in node.input]
            result = node.output[0]
            node.output[0] = f"{result}__{precision}_out"
            lowered[result] = node.output[0]  # a product feeding another needs no round trip
            nodes.append(node)
            nodes.append(helper.make_node("Cast", [node.output[0]], [result], to=TensorProto.FLOAT, name=f"cast_{result}"))
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unused_initializers(graph)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _converted_initializer(source: onnx.TensorProto, name: str, low: int) -> onnx.TensorProto:
    values = numpy_helper.to_array(source)
    if low == TensorProto.FLOAT16:
        return numpy_helper.from_array(values.astype("float16"), name)
    # bfloat16 keeps the top 16 bits of the float32 pattern, rounded to nearest even.
    bits = values.astype("float32").view("uint32")
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("uint16")
    tensor = helper.make_tensor(name, TensorProto.BFLOAT16, values.shape, rounded.tobytes(), raw=True)
    return tensor


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {name for node in graph.node for name in node.input}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
