"""Box prompts from label maps, in the challenge's conventions (inclusive bounds)."""
from __future__ import annotations

import numpy as np


def relabel_consecutive(labels: np.ndarray) -> np.ndarray:
    """Map the non-zero label values, in increasing order, to 1..K (0 stays background)."""
    values = np.unique(labels)
    values = values[values != 0]
    dtype = np.uint8 if len(values) <= 255 else np.uint16
    lut = np.zeros(int(labels.max()) + 1, dtype=dtype)
    lut[values] = np.arange(1, len(values) + 1, dtype=dtype)
    return lut[labels]


def boxes_from_labels(labels: np.ndarray) -> np.ndarray:
    """Boxes of labels 1..K of a consecutive label map.

    2D (H, W) -> (K, 4) ``[x_min, y_min, x_max, y_max]``;
    3D (D, H, W) -> (K, 6) ``[x_min, y_min, z_min, x_max, y_max, z_max]``.
    """
    k = int(labels.max())
    out = np.zeros((k, 2 * labels.ndim), dtype=np.int64)
    for i in range(1, k + 1):
        idx = np.nonzero(labels == i)
        if len(idx[0]) == 0:
            raise ValueError(f"label {i} is empty: relabel to consecutive values first")
        lo = [int(a.min()) for a in idx]
        hi = [int(a.max()) for a in idx]
        if labels.ndim == 2:          # idx order (y, x)
            out[i - 1] = [lo[1], lo[0], hi[1], hi[0]]
        else:                         # idx order (z, y, x)
            out[i - 1] = [lo[2], lo[1], lo[0], hi[2], hi[1], hi[0]]
    return out
