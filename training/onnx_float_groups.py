"""Encoder layer groups run in float in an exported QCDQ encoder, without a new calibration.

A layer of the QCDQ graph runs in int8 because its activation input passes through
QuantizeLinear -> DequantizeLinear; bypassing that pair (the layer reads the float tensor) leaves
only its weights' dequantization, which OpenVINO folds into float weights.  So the mixed-precision
measurement (``benchmarks/bench_mixed.py``) can make any set of groups float in seconds; the
shipped models get their float groups from the recipe instead (``training.ptq_recipe``), which
calibrates the remaining layers with the float ones in place.
"""
from __future__ import annotations

import onnx

from training.model.surgery import ENCODER_GROUPS, group_of

ACTIVATION_PROXIES = ("/input_quant/", "/act_quant/")


def module_of(dq_name: str) -> str | None:
    """The encoder module (torch name) whose activation quantizer a DequantizeLinear node belongs
    to, or None for weight and other nodes: ``/layers.1/blocks.0/attn/qkv/layer/input_quant/...``
    -> ``layers.1.blocks.0.attn.qkv``."""
    proxy = next((p for p in ACTIVATION_PROXIES if p in dq_name), None)
    if proxy is None:
        return None
    path = dq_name.split(proxy)[0].strip("/")
    if path.endswith("/layer"):
        path = path[: -len("/layer")]
    return path.replace("/", ".")


def groups_present(proto: onnx.ModelProto) -> dict[str, int]:
    """Activation quantizers per encoder group in the graph."""
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        module = module_of(node.name) if node.op_type == "DequantizeLinear" else None
        if module is not None:
            g = group_of(module, ENCODER_GROUPS)
            counts[g] = counts.get(g, 0) + 1
    return counts


def make_float(proto: onnx.ModelProto, groups) -> int:
    """Bypass the activation quantizers of ``groups`` (in place); returns how many were bypassed."""
    groups = set(groups)
    producer = {out: node for node in proto.graph.node for out in node.output}
    replace: dict[str, str] = {}
    for node in proto.graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        module = module_of(node.name)
        if module is None or group_of(module, ENCODER_GROUPS) not in groups:
            continue
        src = producer.get(node.input[0])
        while src is not None and src.op_type == "Clip":           # narrow-range clips, if any
            src = producer.get(src.input[0])
        if src is None or src.op_type != "QuantizeLinear":
            raise ValueError(f"{node.name}: no QuantizeLinear before it")
        replace[node.output[0]] = src.input[0]
    for node in proto.graph.node:
        for i, name in enumerate(node.input):
            if name in replace:
                node.input[i] = replace[name]
    _drop_dead(proto)
    return len(replace)


def _drop_dead(proto: onnx.ModelProto) -> None:
    """Remove nodes whose outputs nothing uses (the bypassed quantizers)."""
    while True:
        used = {name for node in proto.graph.node for name in node.input} | {o.name for o in proto.graph.output}
        dead = [node for node in proto.graph.node if not any(o in used for o in node.output)]
        if not dead:
            return
        for node in dead:
            proto.graph.node.remove(node)
