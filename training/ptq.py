"""Post-training quantization of LiteMedSAM with Brevitas.

Building blocks of the recipe in ``training/ptq_recipe.py`` (numbers in
``models/manifest.json``): activation calibration with Brevitas
``calibration_mode``; per-group sensitivity (embedding error when only one
group of layers is int8); a greedy return of the most sensitive groups to float
until the int8 masks agree with the float masks on held-out real boxes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from qmedsam.preprocess import boxes_to_model, image_to_tensor
from qmedsam_eval.metrics import dice
from training.model.surgery import group_of, quant_leaves, set_quant_enabled


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
    """Per-mask Dice of (B, 1, H, W) boolean masks (the evaluation's Dice: 1 when both are empty)."""
    return torch.tensor([dice(x, y) for x, y in zip(a.cpu().numpy(), b.cpu().numpy())])


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
