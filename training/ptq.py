"""Post-training quantization of LiteMedSAM with Brevitas.

Building blocks of the recipe in ``training/ptq_recipe.py`` (numbers in
``models/manifest.json``), each a Brevitas tool: BatchNorm merging
(``surgery.merge_batchnorms``), SmoothQuant-style activation equalization
(``activation_equalization_mode``), activation calibration (``calibration_mode``) and bias
correction (``bias_correction_mode``), and the agreement with the float model on held-out
real images that decides between them.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from qmedsam.image.preprocess import boxes_to_model, image_to_tensor
from qmedsam_eval.metrics import dice
from training.model.surgery import quant_leaves, set_quant_enabled


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def model_inputs(slices) -> list[torch.Tensor]:
    """The model inputs (1, 3, 256, 256) of (name, image) pairs, by the runtime's preprocessing."""
    return [torch.from_numpy(image_to_tensor(img)[0]) for _, img in slices]


@torch.no_grad()
def calibrate_encoder(qenc: nn.Module, images: list[torch.Tensor]) -> None:
    from brevitas.graph.calibrate import calibration_mode

    qenc.eval()
    with calibration_mode(qenc):
        for x in tqdm(images, desc="calibrate encoder", leave=False):
            qenc(x)


@torch.no_grad()
def equalize_activations(qenc: nn.Module, images: list[torch.Tensor], alpha: float) -> int:
    """Brevitas activation equalization (SmoothQuant-style, layerwise): each quantized layer's
    input channels are divided by ``max|x|^alpha / max|w|^(1-alpha)`` (measured on ``images``
    with the quantizers off) and its weights multiplied by the same, so a few outlier channels
    no longer set the per-tensor input scale.  The division is a constant Mul before the input
    quantizer, which OpenVINO folds into the quantization.  Returns how many layers changed."""
    from brevitas.graph.equalize import activation_equalization_mode

    leaves = quant_leaves(qenc)
    for m in leaves.values():
        set_quant_enabled(m, False)
    qenc.eval()
    with activation_equalization_mode(qenc, alpha=alpha, layerwise=True, add_mul_node=True) as eq:
        for x in tqdm(images, desc="equalize activations", leave=False):
            qenc(x)
    for m in quant_leaves(qenc).values():
        set_quant_enabled(m, True)
    return len(eq.scale_factors or [])


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


def joined(*sets: EvalSet) -> EvalSet:
    """One eval set holding the images, boxes, embeddings and masks of several."""
    return EvalSet(*([item for ev in sets for item in getattr(ev, f.name)] for f in fields(EvalSet)))


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
def agreement_by_modality(qenc, fdec, sets: dict[str, EvalSet]) -> dict[str, dict]:
    """:func:`as_record` of :func:`agreement` for each held-out modality, plus their mean."""
    out = {m: as_record(agreement(qenc, fdec, ev)) for m, ev in sets.items()}
    out["mean"] = {k: round(float(np.mean([r[k] for r in out.values()])), 4)
                   for k in ("embedding_error", "mask_dice")}
    return out


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
