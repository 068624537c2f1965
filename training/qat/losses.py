"""Segmentation and distillation losses (logits and targets are (B, 1, 256, 256))."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss, mean over the batch (0 for a perfect confident prediction)."""
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    inter = (p * t).sum(1)
    return (1 - (2 * inter + eps) / (p.sum(1) + t.sum(1) + eps)).mean()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float = 0.25) -> torch.Tensor:
    """Binary focal loss (Lin et al.); gamma=0 and alpha<0 give plain BCE."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    loss = bce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * target + (1 - alpha) * (1 - target))
    return loss.mean()


def segmentation_loss(logits, target, dice_weight: float = 1.0, mask_weight: float = 20.0,
                      mask_loss: str = "focal") -> torch.Tensor:
    """dice_weight * Dice + mask_weight * (focal | bce)."""
    if mask_loss == "focal":
        pixel = focal_loss(logits, target)
    elif mask_loss == "bce":
        pixel = F.binary_cross_entropy_with_logits(logits, target)
    else:
        raise ValueError(f"mask_loss must be 'focal' or 'bce', not {mask_loss!r}")
    return dice_weight * dice_loss(logits, target) + mask_weight * pixel


def mask_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample IoU of (logits > 0) with a binary target, (B,); 1 when both are empty."""
    pred = (logits > 0).flatten(1)
    t = target.flatten(1) > 0.5
    inter = (pred & t).sum(1).float()
    union = (pred | t).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def distillation_loss(student_emb: torch.Tensor, teacher_emb: torch.Tensor,
                      teacher_iou: torch.Tensor) -> torch.Tensor:
    """MSE of the embeddings per sample, weighted by the teacher mask's IoU with the truth."""
    per_sample = ((student_emb - teacher_emb.detach()) ** 2).flatten(1).mean(1)
    return (per_sample * teacher_iou.detach()).mean()
