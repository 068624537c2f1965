"""Fold ``Clip`` nodes whose operands are all constants (Brevitas QCDQ weight clips).

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
