"""Float groups in an exported QCDQ encoder (training.onnx_float_groups), on the committed ONNX."""
import onnx
import pytest

from conftest import MODELS
from training.onnx_float_groups import groups_present, make_float, module_of

ONNX = MODELS / "reference" / "encoder.onnx"
pytestmark = pytest.mark.skipif(not ONNX.exists(), reason="run `make export` first")


def test_activation_quantizers_map_to_their_torch_modules():
    assert module_of("/layers.1/blocks.0/attn/qkv/layer/input_quant/export_handler/DequantizeLinear") \
        == "layers.1.blocks.0.attn.qkv"
    assert module_of("/layers.2/blocks.3/attn/q_quant/act_quant/export_handler/DequantizeLinear") \
        == "layers.2.blocks.3.attn.q_quant"
    assert module_of("/layers.1/blocks.0/attn/qkv/layer/weight_quant/export_handler/DequantizeLinear") is None


def _int8_inputs(proto, prefix):
    """Conv/MatMul nodes under ``prefix`` and whether each reads a dequantized activation."""
    return {n.name: any("input_quant" in i or "act_quant" in i for i in n.input)
            for n in proto.graph.node if n.op_type in ("Conv", "MatMul") and n.name.startswith(prefix)}


def test_a_float_group_reads_float_activations_and_the_rest_stays_int8():
    proto = onnx.load(str(ONNX))
    before = groups_present(proto)
    assert sum(before.values()) == sum(n.op_type == "QuantizeLinear" for n in proto.graph.node)
    assert make_float(proto, ["stage1.mlp", "stage2.mlp"]) == before["stage1.mlp"] + before["stage2.mlp"]
    onnx.checker.check_model(proto)
    after = groups_present(proto)
    assert "stage1.mlp" not in after and "stage2.mlp" not in after
    assert {g: n for g, n in before.items() if g not in ("stage1.mlp", "stage2.mlp")} == after
    for stage in (1, 2):
        layers = _int8_inputs(proto, f"/layers.{stage}/blocks.")
        assert not any(v for k, v in layers.items() if "/mlp/" in k)
        assert all(v for k, v in layers.items() if "/mlp/" not in k)
    assert all(_int8_inputs(proto, "/layers.3/blocks.").values())
