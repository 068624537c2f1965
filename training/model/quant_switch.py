"""The float/quantized switch shared by every LiteMedSAM module.

Each module receives a :class:`QuantConfig` and asks it for its layers.  With
``enabled=False`` the config hands out plain ``torch.nn`` layers; with
``enabled=True`` it hands out Brevitas layers that quantize their *input*
(8-bit signed, per tensor, float scale initialised from runtime statistics and
learned afterwards) and their *weights* (8-bit, per tensor or per output channel), plus
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
    # Per-output-channel weight scales (post-training quantization and QAT use them, with the
    # encoder's BatchNorms merged; the paper uses per-tensor scales).  OpenVINO runs them in
    # int8 once the exported per-channel zero points are untied (training/onnx_fold.py).
    weight_per_channel: bool = False
    # An unsigned input quantizer for the [0, 1] image (256 levels instead of the 128
    # a signed one leaves for non-negative values).  Elsewhere inputs stay signed and
    # symmetric: OpenVINO runs layers with zero-point (asymmetric) activations in float,
    # and an unsigned quantizer after GELU clips its negative tail (measured: mask Dice
    # vs float 0.60, against 0.95 signed).
    range_aware_inputs: bool = False
    # Weight bits (narrow range: |q| <= 2**(bits-1) - 1).  7 keeps every pair of u8 x s8 products
    # within the 16-bit sums that int8 kernels without VNNI accumulate in (255 * 63 * 2 < 2**15).
    weight_bits: int = 8

    # -- quantizer injectors -------------------------------------------------
    def _weight_quant(self):
        from brevitas.quant import Int8WeightPerChannelFloat, Int8WeightPerTensorFloat

        quant = Int8WeightPerChannelFloat if self.weight_per_channel else Int8WeightPerTensorFloat
        return quant if self.weight_bits == 8 else quant.let(bit_width=self.weight_bits)

    def _input_act(self, kind: str = "signed"):
        """Quantizer for a layer input; ``kind`` is 'signed' or 'image' (values in [0, 1])."""
        from brevitas.quant import Int8ActPerTensorFloat, Uint8ActPerTensorFloat

        if kind not in ("signed", "image"):
            raise ValueError(kind)
        return Uint8ActPerTensorFloat if self.range_aware_inputs and kind == "image" else Int8ActPerTensorFloat

    # -- layers --------------------------------------------------------------
    def conv2d(self, cin, cout, kernel_size, stride=1, padding=0, groups=1, bias=True,
               input_kind: str = "signed") -> nn.Module:
        if not self.enabled:
            return nn.Conv2d(cin, cout, kernel_size, stride, padding, groups=groups, bias=bias)
        import brevitas.nn as qnn

        return qnn.QuantConv2d(
            cin, cout, kernel_size, stride=stride, padding=padding, groups=groups, bias=bias,
            input_quant=self._input_act(input_kind), weight_quant=self._weight_quant(),
            return_quant_tensor=False)

    def conv_transpose2d(self, cin, cout, kernel_size, stride=1, input_kind: str = "signed") -> nn.Module:
        if not self.enabled:
            return nn.ConvTranspose2d(cin, cout, kernel_size, stride)
        import brevitas.nn as qnn

        return qnn.QuantConvTranspose2d(
            cin, cout, kernel_size, stride=stride,
            input_quant=self._input_act(input_kind), weight_quant=self._weight_quant(),
            return_quant_tensor=False)

    def linear(self, fin, fout, bias=True, input_kind: str = "signed") -> nn.Module:
        if not self.enabled:
            return nn.Linear(fin, fout, bias=bias)
        import brevitas.nn as qnn

        return qnn.QuantLinear(
            fin, fout, bias=bias,
            input_quant=self._input_act(input_kind), weight_quant=self._weight_quant(),
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

        act = Uint8ActPerTensorFloat if unsigned else self._input_act("signed")
        return qnn.QuantIdentity(act_quant=act, return_quant_tensor=False)


FLOAT = QuantConfig(enabled=False)
