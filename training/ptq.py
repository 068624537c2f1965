"""Post-training quantization of LiteMedSAM with Brevitas.

Building blocks of the recipe in ``training/ptq_recipe.py`` (numbers in
``models/manifest.json``): activation calibration with Brevitas
``calibration_mode``; per-group sensitivity (embedding error when only one
group of layers is int8); a greedy return of the most sensitive groups to float
until the int8 masks agree with the float masks on held-out real boxes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

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
def correct_bias(module: nn.Module, inputs: list[tuple]) -> None:
    """Brevitas bias correction: each quantized layer's bias absorbs the mean shift its
    quantization (and everything upstream) adds to its output on ``inputs``.  Layers
    without a bias (convolutions before a BatchNorm) get one."""
    from brevitas.graph.calibrate import bias_correction_mode

    module.eval()
    with bias_correction_mode(module, skip_if_no_bias=False):
        for args in tqdm(inputs, desc="bias correction", leave=False):
            module(*args)


@dataclass
class EvalSet:
    """Held-out real images with boxes, and the float model's embeddings and masks for them."""

    images: list[torch.Tensor]
    boxes: list[torch.Tensor]
    embeddings: list[torch.Tensor]
    masks: list[torch.Tensor]


@torch.no_grad()
def make_eval_set(fmodel, pairs) -> EvalSet:
    ev = EvalSet([], [], [], [])
    for img, boxes in pairs:
        x, geo = image_to_tensor(img)
        x, b = torch.from_numpy(x), torch.from_numpy(boxes_to_model(boxes, geo))
        emb = fmodel.image_encoder(x)
        ev.images.append(x)
        ev.boxes.append(b)
        ev.embeddings.append(emb)
        ev.masks.append(fmodel.decoder()(emb, b) > 0)
    return ev


def mask_dice(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-mask Dice of (B, 1, H, W) boolean masks (1 when both are empty)."""
    inter = (a & b).sum(dim=(1, 2, 3)).float()
    total = (a.sum(dim=(1, 2, 3)) + b.sum(dim=(1, 2, 3))).float()
    return torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total))


@torch.no_grad()
def agreement(qenc, fdec, ev: EvalSet) -> tuple[float, float]:
    """(mean relative embedding error, mean mask Dice vs float) of an encoder on the eval set."""
    errs, dices = [], []
    for x, b, ref, ref_mask in zip(ev.images, ev.boxes, ev.embeddings, ev.masks):
        emb = qenc(x)
        errs.append(rel_error(emb, ref))
        dices.append(mask_dice(fdec(emb, b) > 0, ref_mask))
    return float(np.mean(errs)), float(torch.cat(dices).mean())


def as_record(scores: tuple[float, float]) -> dict:
    """An :func:`agreement` result as the manifest writes it."""
    return {"embedding_error": round(scores[0], 4), "mask_dice": round(scores[1], 4)}


@torch.no_grad()
def choose_float_groups(qenc, fdec, ev: EvalSet, target_dice: float, max_groups: int = 8):
    """Per-group sensitivity (embedding error with only that group int8), then put the most
    sensitive groups back to float, one at a time, until the masks agree with float."""
    leaves = quant_leaves(qenc)
    by_group: dict[str, list[str]] = {}
    for n in leaves:
        by_group.setdefault(group_of(n), []).append(n)

    def measure(float_names: set[str]):
        for n, m in leaves.items():
            set_quant_enabled(m, n not in float_names)
        return agreement(qenc, fdec, ev)

    all_int8 = measure(set())
    sensitivity = {}
    for g, names in tqdm(by_group.items(), desc="sensitivity", leave=False):
        sensitivity[g] = measure(set(leaves) - set(names))[0]
    chosen: list[str] = []
    current = all_int8
    steps = []
    for g in sorted(sensitivity, key=sensitivity.get, reverse=True):
        if current[1] >= target_dice or len(chosen) >= max_groups:
            break
        chosen.append(g)
        current = measure({n for c in chosen for n in by_group[c]})
        steps.append({"float": list(chosen), **as_record(current)})
    for m in leaves.values():
        set_quant_enabled(m, True)
    float_layers = [n for g in chosen for n in by_group[g]]
    return {"all_int8": as_record(all_int8),
            "embedding_error_when_only_this_group_is_int8":
                {k: round(v, 4) for k, v in sorted(sensitivity.items(), key=lambda kv: -kv[1])},
            "greedy_steps": steps, "groups_kept_float": chosen,
            "final": as_record(current),
            }, float_layers


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
