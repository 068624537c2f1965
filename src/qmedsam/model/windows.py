"""Which window of the 64x64 grid each box's per-pixel decoder work runs over.

The per-box decoder graph does its up-scaling and mask product (a box's per-pixel work; what
that share buys is measured in docs/decisions/windowed-decoding.md) only over the grid cells it is given (``training/model/factored_decoder.py``).
A box is given the smallest square window of :data:`SIZES` cells (4 pixels of the 256x256
logits a cell) that holds it with :data:`MARGIN` pixels around it; a box no window holds gets
the whole grid.  Outside its window a box's logits are :data:`OUTSIDE` (no mask there).
"""
from __future__ import annotations

import numpy as np

GRID = 64                  # cells a side; a cell is 4x4 pixels of the 256x256 logits
SIZES = (16, 32)           # window sides in cells (64 and 128 pixels)
# Pixels (256-space) kept around a box inside its window; chosen with `make bench-model`
# (docs/decisions/windowed-decoding.md): the masks' Dice against the full decoder's on real slices.
MARGIN = 16
OUTSIDE = -20.0            # logit of every pixel outside a box's window (sigmoid ~ 2e-9)


def window_origin(box: np.ndarray, size: int, margin: int = MARGIN) -> tuple[int, int] | None:
    """Top-left cell (y, x) of a ``size``-cell window centred on ``box`` (x0, y0, x1, y1 in
    256-space) that holds it with ``margin`` pixels around it (clipped at the grid's edges), or
    None where it does not fit."""
    x0, y0, x1, y1 = (float(v) for v in box)
    origin = []
    for lo, hi in ((y0, y1), (x0, x1)):
        lo, hi = max(lo - margin, 0.0), min(hi + margin, 4.0 * GRID)
        first = max(int(np.ceil(hi / 4)) - size, 0)          # the window must reach hi ...
        last = min(int(np.floor(lo / 4)), GRID - size)       # ... and start by lo
        if first > last:
            return None
        origin.append(int(np.clip(round((lo + hi) / 8 - size / 2), first, last)))
    return origin[0], origin[1]


def plan_windows(boxes: np.ndarray, margin: int = MARGIN, sizes=SIZES) -> list[tuple[int | None, np.ndarray, np.ndarray]]:
    """Boxes (B, 1, 4) in 256-space grouped by window: (size in cells or None for the whole grid,
    indices of the boxes, their (n, 2) window origins); with no ``sizes`` every box gets the whole grid."""
    groups: dict[int | None, list] = {}
    for i, box in enumerate(boxes[:, 0]):
        for size in sizes:
            origin = window_origin(box, size, margin)
            if origin is not None:
                groups.setdefault(size, []).append((i, origin))
                break
        else:
            groups.setdefault(None, []).append((i, (0, 0)))
    return [(size, np.array([i for i, _ in g]), np.array([o for _, o in g], dtype=np.int64).reshape(-1, 2))
            for size, g in groups.items()]


def cells(origins: np.ndarray, size: int | None) -> np.ndarray:
    """(n, size, size) int64 cell indices (y * 64 + x) of the windows at ``origins`` (n, 2); the
    whole grid for ``size`` None."""
    if size is None:
        return np.broadcast_to(np.arange(GRID * GRID, dtype=np.int64).reshape(1, GRID, GRID),
                               (len(origins), GRID, GRID))
    r = np.arange(size, dtype=np.int64)
    return (origins[:, :1, None] + r[None, :, None]) * GRID + origins[:, 1:, None] + r[None, None, :]
