"""Dice agreement between two label maps (e.g. int8 vs FP32 predictions of the same case)."""
from __future__ import annotations

import numpy as np


def label_dice(a: np.ndarray, b: np.ndarray) -> dict[int, float]:
    """Dice per label present in either map (labels 1..max)."""
    out = {}
    for lab in sorted(set(np.unique(a)) | set(np.unique(b))):
        if lab == 0:
            continue
        x, y = a == lab, b == lab
        out[int(lab)] = float(2 * np.logical_and(x, y).sum() / (x.sum() + y.sum()))
    return out
