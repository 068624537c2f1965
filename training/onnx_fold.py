"""Clean-ups of Brevitas QCDQ ONNX that decide whether OpenVINO runs a layer in int8.

``fold_constant_clips``: fold ``Clip`` nodes whose operands are all constants (weight clips).

Brevitas' QCDQ export writes each int8 weight as ``initializer -> Clip -> DequantizeLinear``.
OpenVINO keeps that Clip as a live Maximum/Minimum pair, and for convolutions
(whose BatchNorm it fuses into the weight path) the pattern is then no longer
recognised as a quantized weight: the convolution runs in float.  With the
Clip folded into the initializer, the convolutions run in u8/i8.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def fold_constant_clips(model: onnx.ModelProto) -> int:
    """Fold in place; returns how many Clip nodes were folded."""
    graph = model.graph
    values = _constants(graph)
    kept, folded = [], 0
    for node in graph.node:
        operands = [x for x in node.input if x]
        if node.op_type == "Clip" and all(x in values for x in operands):
            data = values[node.input[0]]
            lo = values[node.input[1]] if len(node.input) > 1 and node.input[1] else None
            hi = values[node.input[2]] if len(node.input) > 2 and node.input[2] else None
            out = np.clip(data, lo, hi).astype(data.dtype)
            graph.initializer.append(numpy_helper.from_array(out, node.output[0]))
            values[node.output[0]] = out
            folded += 1
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    return folded


def untie_dequant_constants(model: onnx.ModelProto) -> int:
    """Give every ``DequantizeLinear`` its own copy of non-scalar scale / zero-point constants
    (in place); returns how many inputs were untied.

    The ONNX exporter shares identical initializers between nodes, so the all-zero per-channel
    zero points of layers with the same output width become one tensor.  OpenVINO then sees a
    weight dequantization with several consumers and runs those layers in f32 (measured: 20 of
    40 linears and 19 of 29 convolutions of the encoder); untied, all run in int8."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for x in node.input:
            uses[x] = uses.get(x, 0) + 1
    untied = 0
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        for j in range(1, len(node.input)):
            name = node.input[j]
            if name in inits and uses[name] > 1 and len(inits[name].dims) > 0:
                copy = onnx.TensorProto()
                copy.CopyFrom(inits[name])
                copy.name = f"{name}__{node.name or untied}"
                graph.initializer.append(copy)
                node.input[j] = copy.name
                untied += 1
    return untied
