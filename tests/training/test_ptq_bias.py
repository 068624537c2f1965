"""Bias correction: a quantized layer's bias absorbs the mean shift quantization adds."""
import torch

from training.model.quant_switch import QuantConfig
from training.model.surgery import to_float_layer
from training.ptq import calibrate_encoder, correct_bias


def test_bias_correction_removes_the_mean_output_shift_and_adds_missing_biases():
    torch.manual_seed(0)
    conv = QuantConfig(enabled=True).conv2d(8, 16, 3, padding=1, bias=False)
    with torch.no_grad():   # a few large weights stretch the per-tensor scale, as in depthwise layers
        conv.weight.mul_(0.05)
        conv.weight[0, 0, 1, 1] = 1.0
    ref = to_float_layer(conv)
    inputs = [torch.rand(2, 8, 16, 16) + 0.5 for _ in range(8)]
    calibrate_encoder(conv, inputs)

    def shift():
        with torch.no_grad():
            d = torch.cat([conv(x) - ref(x) for x in inputs])
        return d.mean(dim=(0, 2, 3)).abs().max().item()

    before = shift()
    correct_bias(conv, [(x,) for x in inputs])
    after = shift()
    print(f"largest per-channel mean shift {before:.4g} -> {after:.4g}")
    assert conv.bias is not None
    assert before > 1e-3 and after < 0.05 * before
