"""Model surgery on the quantized LiteMedSAM: find its Brevitas leaves, switch their
quantizers, and swap chosen leaves for plain float layers with the same parameters.

Used by post-training quantization (which groups stay float), QAT (the student keeps the
same float layers) and export (a QAT checkpoint names its float layers).
"""
from __future__ import annotations

import re

from torch import nn


def quant_leaves(model: nn.Module) -> dict[str, nn.Module]:
    """Every Brevitas layer / operand quantizer, by qualified name."""
    import brevitas.nn as qnn

    kinds = (qnn.QuantConv2d, qnn.QuantLinear, qnn.QuantConvTranspose2d, qnn.QuantIdentity)
    return {n: m for n, m in model.named_modules() if isinstance(m, kinds)}


def set_quant_enabled(module: nn.Module, enabled: bool) -> None:
    for proxy in ("input_quant", "weight_quant", "act_quant"):
        p = getattr(module, proxy, None)
        if p is not None and hasattr(p, "disable_quant"):
            p.disable_quant = not enabled


def to_float_layer(m: nn.Module) -> nn.Module:
    """A plain torch layer with the same parameters as a Brevitas layer."""
    import brevitas.nn as qnn

    if isinstance(m, qnn.QuantIdentity):
        return nn.Identity()
    if isinstance(m, qnn.QuantConvTranspose2d):
        f = nn.ConvTranspose2d(m.in_channels, m.out_channels, m.kernel_size, m.stride,
                               bias=m.bias is not None)
    elif isinstance(m, qnn.QuantConv2d):
        f = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                      groups=m.groups, bias=m.bias is not None)
    elif isinstance(m, qnn.QuantLinear):
        f = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
    else:
        raise TypeError(type(m))
    f.weight.data.copy_(m.weight.data)
    if m.bias is not None:
        f.bias.data.copy_(m.bias.data)
    return f


def merge_batchnorms(model: nn.Module) -> int:
    """Fold every ``ConvBN``'s BatchNorm into its convolution (Brevitas ``merge_bn``), leaving an
    identity in its place; returns how many were merged.  The float function is unchanged; the
    int8 weights are then those of the convolution the CPU really runs, so per-channel scales
    cover the BatchNorm's per-channel gains."""
    from brevitas.nn.utils import merge_bn

    from training.model.tiny_vit import ConvBN

    merged = 0
    for m in model.modules():
        if isinstance(m, ConvBN) and isinstance(m.bn, nn.BatchNorm2d):
            merge_bn(m.c, m.bn)
            m.bn = nn.Identity()
            merged += 1
    return merged


def keep_float(model: nn.Module, names: list[str]) -> None:
    """Replace the named quantized leaves by float layers (in place)."""
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, to_float_layer(getattr(parent, child)))


# Group names: a leaf belongs to the first pattern that matches its name.
ENCODER_GROUPS = [
    ("patch_embed", r"^patch_embed\."),
    ("stage0.mbconv", r"^layers\.0\.blocks\."),
    ("merge0", r"^layers\.0\.downsample\."),
    ("merge1", r"^layers\.1\.downsample\."),
    ("merge2", r"^layers\.2\.downsample\."),
    *[(f"stage{s}.{part}", rf"^layers\.{s}\.blocks\.\d+\.{pat}")
      for s in (1, 2, 3)
      for part, pat in (("attn.linear", r"attn\.(qkv|proj)$"),
                        ("attn.matmul", r"attn\.(q|k|v|attn)_quant$"),
                        ("local_conv", r"local_conv\."),
                        ("mlp", r"mlp\."))],
    ("neck", r"^neck\."),
]


def group_of(name: str, groups=ENCODER_GROUPS) -> str:
    for g, pat in groups:
        if re.search(pat, name):
            return g
    return "other"


def layers_in_groups(module: nn.Module, groups) -> list[str]:
    """Names of the quantized leaves of ``module`` (an encoder) that belong to the named groups."""
    known = {g for g, _ in ENCODER_GROUPS} | {"other"}
    unknown = set(groups) - known
    if unknown:
        raise ValueError(f"unknown encoder group(s) {sorted(unknown)}; known: {sorted(known)}")
    return [n for n in quant_leaves(module) if group_of(n) in set(groups)]
