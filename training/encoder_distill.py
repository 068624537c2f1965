"""Distillation-only QAT of the calibrated int8 image encoder against the float encoder.

After calibration, the quantized encoder is trained for a few hundred steps to
reproduce the float encoder's embeddings on unlabelled public slices: weights,
biases, norms and the learned activation scales all move, BatchNorm statistics
stay fixed.  No labels are used; the float model is the only teacher, which is
exactly what the int8-vs-FP32 agreement measures.

Inputs are random crops (50-100 % of each side) of the raw slices, through the
runtime's preprocessing, with random flips, so a few hundred slices cover many
more views than the calibration pass saw.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from qmedsam.image.preprocess import image_to_tensor
from training.qat.distill_data import crop_and_flip
from training.qat.student import keep_batchnorm_statistics


def random_view(img: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """A (1, 3, 256, 256) model input from a random crop and flip of a raw 2D slice."""
    return torch.from_numpy(image_to_tensor(crop_and_flip(img, rng))[0])


def embedding_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Squared error relative to the teacher's energy (scale-free, ~ relative error squared)."""
    return ((student - teacher) ** 2).mean() / (teacher ** 2).mean().clamp_min(1e-12)


def is_scale(name: str) -> bool:
    return "scaling_impl" in name


def distill_encoder(qenc: nn.Module, fenc: nn.Module, slices: list[np.ndarray], steps: int,
                    batch: int = 2, lr: float = 1e-5, scale_lr: float = 1e-5, seed: int = 0) -> list[float]:
    """Train ``qenc`` towards ``fenc``'s embeddings; returns the loss of every step."""
    if steps <= 0:
        return []
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    fenc.eval()
    params = [(n, p) for n, p in qenc.named_parameters() if p.requires_grad]
    opt = torch.optim.Adam([
        {"params": [p for n, p in params if not is_scale(n)], "lr": lr},
        {"params": [p for n, p in params if is_scale(n)], "lr": scale_lr},
    ])
    base = [g["lr"] for g in opt.param_groups]
    warmup = max(1, steps // 20)
    losses = []
    qenc.train()
    keep_batchnorm_statistics(qenc)
    bar = tqdm(range(steps), desc="distil encoder", leave=False)
    for step in bar:
        f = min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for g, b in zip(opt.param_groups, base):
            g["lr"] = b * f
        x = torch.cat([random_view(slices[i], rng) for i in rng.integers(0, len(slices), batch)])
        with torch.no_grad():
            target = fenc(x)
        loss = embedding_loss(qenc(x), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
        opt.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    qenc.eval()
    return losses
