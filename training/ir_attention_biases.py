"""Smaller encoder IR: TinyViT's attention-bias tables stored compact, gathered at load.

Each attention block adds a learned bias per head and relative offset, expanded by the exporter's
constant folding into a (1, heads, N, N) tensor: 0.77 MB a stage-2 block, 4.7 MB an encoder, most
of its float constants.  Each such tensor holds only heads x offsets distinct values, so it is
stored as that table and an index map shared by the blocks of the same size, and a Gather makes it
again (OpenVINO folds the Gather when it compiles: the compiled model and its results are the same).
"""
from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset13 as ops

MIN_BYTES = 64 * 1024           # smaller constants are not worth a Gather
SCORE_USERS = ("Add", "ScaledDotProductAttention")   # the bias is added to the attention scores


def _bias_constants(model: ov.Model):
    """(node to replace, values) of each (1, heads, N, N) constant that feeds an Add (the
    attention-score bias): an f32 constant, or an f16-stored one and its Convert to f32."""
    for op in model.get_ops():
        if op.get_type_name() != "Constant" or op.get_element_type() not in (ov.Type.f32, ov.Type.f16):
            continue
        shape = list(op.get_output_shape(0))
        if len(shape) == 4 and shape[0] == 1:
            shape = shape[1:]
        if len(shape) != 3 or shape[1] != shape[2] or 2 * np.prod(shape) < MIN_BYTES:
            continue
        node = op
        if op.get_element_type() == ov.Type.f16:
            users = [t.get_node() for t in op.output(0).get_target_inputs()]
            if len(users) != 1 or users[0].get_type_name() != "Convert":
                continue
            node = users[0]
        if all(t.get_node().get_type_name() in SCORE_USERS for t in node.output(0).get_target_inputs()):
            yield node, op.get_data().astype(np.float32)


def compact_attention_biases(model: ov.Model) -> int:
    """Replace each expanded attention-bias constant by Gather(table, index) (in place); returns the
    bytes saved.  A tensor whose values are not a table of per-head offsets is left alone."""
    saved = 0
    indices: dict[tuple, ov.Node] = {}
    for node, data in list(_bias_constants(model)):
        heads, n = data.shape[-3], data.shape[-1]
        values = data.reshape(heads, n * n)
        table, index = np.unique(values.T, axis=0, return_inverse=True)      # rows: positions
        if table.shape[0] * 4 > n * n:                                        # not a table: skip
            continue
        index = index.reshape(n, n).astype(np.int32)
        key = (n, index.tobytes())
        if key not in indices:
            indices[key] = ops.constant(index)
        gathered = ops.gather(ops.constant(np.ascontiguousarray(table.T.astype(np.float32))), indices[key],
                              ops.constant(np.int32(1)))                     # (heads, n, n)
        restored = ops.unsqueeze(gathered, ops.constant(np.int64(0))) if data.ndim == 4 else gathered
        for target in list(node.output(0).get_target_inputs()):
            target.replace_source_output(restored.output(0))
        stored = 2 if node.get_type_name() == "Convert" else 4
        saved += data.size * stored - table.nbytes
    return saved
