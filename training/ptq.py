"""Post-training quantization of LiteMedSAM with Brevitas.

Recipe (measured, see ``models/manifest.json``):
1. quantized build with per-channel 8-bit weights, per-tensor 8-bit activations;
2. activation scales calibrated (Brevitas ``calibration_mode``, percentile
   statistics) on real 2D slices, the decoder on real embeddings and boxes;
3. per-group sensitivity: the relative embedding error when only one group of
   layers is quantized; the most sensitive groups are put back to float, one at
   a time, until the whole-encoder error falls under a target.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from qmedsam.preprocess import boxes_to_model, image_to_tensor


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


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


@dataclass
class PtqReport:
    calibration: list[str]
    evaluation: list[str]
    error_all_int8: float
    error_final: float
    group_errors: dict[str, float]
    float_groups: list[str] = field(default_factory=list)
    float_layers: list[str] = field(default_factory=list)
    decoder_error: float | None = None


def _tensors(slices) -> list[torch.Tensor]:
    return [torch.from_numpy(image_to_tensor(img)[0]) for _, img in slices]


@torch.no_grad()
def calibrate_encoder(qenc: nn.Module, images: list[torch.Tensor]) -> None:
    from brevitas.graph.calibrate import calibration_mode

    qenc.eval()
    with calibration_mode(qenc):
        for x in tqdm(images, desc="calibrate encoder", leave=False):
            qenc(x)


@torch.no_grad()
def embedding_error(qenc, references, images) -> float:
    errs = [rel_error(qenc(x), ref) for x, ref in zip(images, references)]
    return float(np.mean(errs))


@torch.no_grad()
def choose_float_groups(qenc, fenc, eval_images, target: float, max_groups: int = 4):
    """Per-group sensitivity, then greedily restore the worst groups to float."""
    refs = [fenc(x) for x in eval_images]
    leaves = quant_leaves(qenc)
    by_group: dict[str, list[str]] = {}
    for n in leaves:
        by_group.setdefault(group_of(n), []).append(n)
    all_err = embedding_error(qenc, refs, eval_images)
    group_err = {}
    for g, names in tqdm(by_group.items(), desc="sensitivity", leave=False):
        for n, m in leaves.items():
            set_quant_enabled(m, n in names)
        group_err[g] = embedding_error(qenc, refs, eval_images)
    for m in leaves.values():
        set_quant_enabled(m, True)
    chosen: list[str] = []
    err = all_err
    for g in sorted(group_err, key=group_err.get, reverse=True):
        if err <= target or len(chosen) >= max_groups:
            break
        chosen.append(g)
        for n in by_group[g]:
            set_quant_enabled(leaves[n], False)
        err = embedding_error(qenc, refs, eval_images)
    for m in leaves.values():
        set_quant_enabled(m, True)
    float_layers = [n for g in chosen for n in by_group[g]]
    return all_err, err, group_err, chosen, float_layers


def decoder_calibration_batches(fmodel, slices_with_boxes):
    """(embedding, boxes) pairs from real images and boxes of their labels."""
    out = []
    with torch.no_grad():
        for img, boxes in slices_with_boxes:
            x, geo = image_to_tensor(img)
            emb = fmodel.image_encoder(torch.from_numpy(x))
            out.append((emb, torch.from_numpy(boxes_to_model(boxes, geo))))
    return out


@torch.no_grad()
def calibrate_decoder(qdec: nn.Module, batches) -> None:
    from brevitas.graph.calibrate import calibration_mode

    qdec.eval()
    with calibration_mode(qdec):
        for emb, boxes in tqdm(batches, desc="calibrate decoder", leave=False):
            qdec(emb, boxes)


@torch.no_grad()
def decoder_error(qdec, fdec, batches) -> float:
    return float(np.mean([rel_error(qdec(e, b), fdec(e, b)) for e, b in batches]))
