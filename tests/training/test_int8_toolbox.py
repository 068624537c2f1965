"""The PTQ toolbox steps: BatchNorm merge, activation equalization, and the ONNX clean-up
that lets OpenVINO run per-channel layers in int8."""
import copy

import numpy as np
import torch
from onnx import TensorProto, helper, numpy_helper

from training.model.quant_switch import QuantConfig
from training.model.surgery import merge_batchnorms, quant_leaves
from training.model.tiny_vit import ConvBN
from training.onnx_fold import untie_dequant_constants
from training.ptq import calibrate_encoder, equalize_activations


def _conv_bn(per_channel=True, seed=0):
    torch.manual_seed(seed)
    m = torch.nn.Sequential(ConvBN(QuantConfig(enabled=True, weight_per_channel=per_channel), 8, 16, k=3))
    bn = m[0].bn
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.1, 4)
        bn.weight.uniform_(0.01, 5)       # per-channel gains two orders of magnitude apart
        bn.bias.uniform_(-1, 1)
    return m.eval()


def test_merging_batchnorms_keeps_the_float_function():
    m = _conv_bn()
    for leaf in quant_leaves(m).values():
        leaf.input_quant.disable_quant = True
        leaf.weight_quant.disable_quant = True
    x = torch.randn(2, 8, 12, 12)
    with torch.no_grad():
        ref = m(x)
        assert merge_batchnorms(m) == 1
        out = m(x)
    assert isinstance(m[0].bn, torch.nn.Identity) and m[0].c.bias is not None
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5)
    assert merge_batchnorms(m) == 0                        # nothing left to merge


def test_per_channel_int8_of_the_merged_convolution_is_closer_to_float():
    """Merged, the weights carry the BatchNorm's per-channel gains (here 0.01-5): per-channel
    scales follow them, one per-tensor scale rounds the small channels away."""
    x = [torch.randn(2, 8, 12, 12) for _ in range(4)]

    def error(per_channel: bool):
        m = _conv_bn(per_channel)
        with torch.no_grad():                              # the float conv + BatchNorm
            ref = [m[0].bn(torch.nn.functional.conv2d(v, m[0].c.weight, padding=1)) for v in x]
        merge_batchnorms(m)
        calibrate_encoder(m, x)
        with torch.no_grad():   # the worst output channel's relative error, BatchNorm shift removed
            out, r = torch.cat([m(v) for v in x]), torch.cat(ref)
            shift = m[0].c.bias.view(1, -1, 1, 1)
            norm = lambda t: t.pow(2).sum(dim=(0, 2, 3)).sqrt()
            return float((norm(out - r) / norm(r - shift)).max())

    per_channel, per_tensor = error(True), error(False)
    print(f"worst channel relative error: per-channel {per_channel:.4f}, per-tensor {per_tensor:.4f}")
    assert per_channel < 0.5 * per_tensor


def test_equalization_tames_an_outlier_input_channel():
    torch.manual_seed(0)
    q = QuantConfig(enabled=True, weight_per_channel=True)
    lin = torch.nn.Sequential(q.linear(32, 32)).eval()
    xs = [torch.randn(64, 32) for _ in range(4)]
    for v in xs:
        v[:, 3] *= 100.0                                   # one channel a hundred times larger
    with torch.no_grad():
        ref = [torch.nn.functional.linear(v, lin[0].weight, lin[0].bias) for v in xs]

    def error(model):
        with torch.no_grad():
            return float(np.mean([((model(v) - r).norm() / r.norm()).item() for v, r in zip(xs, ref)]))

    plain = copy.deepcopy(lin)
    calibrate_encoder(plain, xs)
    assert equalize_activations(lin, xs, alpha=0.5) == 1
    calibrate_encoder(lin, xs)
    print(f"relative error: plain {error(plain):.4f}, equalized {error(lin):.4f}")
    assert error(lin) < 0.7 * error(plain)


def _dq_model():
    """Two weight DequantizeLinear nodes sharing one per-channel zero point, as the exporter
    writes them for layers of the same width."""
    w1 = numpy_helper.from_array(np.ones((4, 3), np.int8), "w1")
    w2 = numpy_helper.from_array(np.full((4, 3), 3, np.int8), "w2")
    zp = numpy_helper.from_array(np.zeros(4, np.int8), "zp")
    s1 = numpy_helper.from_array(np.full(4, 0.1, np.float32), "s1")
    s2 = numpy_helper.from_array(np.full(4, 0.2, np.float32), "s2")
    nodes = [helper.make_node("DequantizeLinear", ["w1", "s1", "zp"], ["a"], name="dq1", axis=0),
             helper.make_node("DequantizeLinear", ["w2", "s2", "zp"], ["b"], name="dq2", axis=0),
             helper.make_node("Add", ["a", "b"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 3])],
                              initializer=[w1, w2, zp, s1, s2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def test_shared_dequantization_constants_are_untied_and_values_kept():
    import onnx.checker
    import onnx.reference

    model = _dq_model()
    before = onnx.reference.ReferenceEvaluator(model).run(None, {})[0]
    assert untie_dequant_constants(model) == 2            # the zero point, once per node
    onnx.checker.check_model(model)
    uses = {}
    for node in model.graph.node:
        for x in node.input:
            uses[x] = uses.get(x, 0) + 1
    assert all(n == 1 for x, n in uses.items() if x not in ("a", "b"))
    np.testing.assert_array_equal(onnx.reference.ReferenceEvaluator(model).run(None, {})[0], before)
