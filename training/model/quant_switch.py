"""The float/quantized switch shared by every LiteMedSAM module.

Each module receives a :class:`QuantConfig` and asks it for its layers.  With
``enabled=False`` the config hands out plain ``torch.nn`` layers; with
``enabled=True`` it hands out Brevitas layers that quantize their *input*
(8-bit signed, per tensor, float scale initialised from runtime statistics and
learned afterwards) and their *weights* (8-bit, per tensor by default), plus
activation quantizers for the operands of matrix products.  Biases,
normalisations, activations and softmax stay float.

Brevitas is imported lazily so the float model never needs it.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class QuantConfig:
    enabled: bool = False
    # Per-output-channel weight scales (useful for post-training quantization);
    # the paper's QAT recipe uses per-tensor weight scales.
    weight_per_channel: bool = False

    # -- quantizer injectors -------------------------------------------------
    def _weight_quant(self):
        from brevitas.quant import Int8WeightPerChannelFloat, Int8WeightPerTensorFloat

        return Int8WeightPerChannelFloat if self.weight_per_channel else Int8WeightPerTensorFloat

    @staticmethod
    def _signed_act():
        from brevitas.quant import Int8ActPerTensorFloat

        return Int8ActPerTensorFloat

    # -- layers --------------------------------------------------------------
    def conv2d(self, cin, cout, kernel_size, stride=1, padding=0, groups=1, bias=True) -> nn.Module:
        if not self.enabled:
            return nn.Conv2d(cin, cout, kernel_size, stride, padding, groups=groups, bias=bias)
        import brevitas.nn as qnn

        return qnn.QuantConv2d(
            cin, cout, kernel_size, stride=stride, padding=padding, groups=groups, bias=bias,
            input_quant=self._signed_act(), weight_quant=self._weight_quant(),
            return_quant_tensor=False)

    def conv_transpose2d(self, cin, cout, kernel_size, stride=1) -> nn.Module:
        if not self.enabled:
            return nn.ConvTranspose2d(cin, cout, kernel_size, stride)
        import brevitas.nn as qnn

        return qnn.QuantConvTranspose2d(
            cin, cout, kernel_size, stride=stride,
            input_quant=self._signed_act(), weight_quant=self._weight_quant(),
            return_quant_tensor=False)

    def linear(self, fin, fout, bias=True) -> nn.Module:
        if not self.enabled:
            return nn.Linear(fin, fout, bias=bias)
        import brevitas.nn as qnn

        return qnn.QuantLinear(
            fin, fout, bias=bias,
            input_quant=self._signed_act(), weight_quant=self._weight_quant(),
            return_quant_tensor=False)

    def operand(self, unsigned: bool = False) -> nn.Module:
        """Quantizer for one operand of a matrix product (identity when float).

        ``unsigned`` is for non-negative tensors such as softmax probabilities,
        which then keep all 8 bits of resolution.
        """
        if not self.enabled:
            return nn.Identity()
        import brevitas.nn as qnn
        from brevitas.quant import Uint8ActPerTensorFloat

        act = Uint8ActPerTensorFloat if unsigned else self._signed_act()
        return qnn.QuantIdentity(act_quant=act, return_quant_tensor=False)


FLOAT = QuantConfig(enabled=False)
