"""Planning 3D boxes into per-slice 2D work, so that every slice is encoded once."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def box_xy(boxes: np.ndarray) -> np.ndarray:
    """The in-plane [x0, y0, x1, y1] columns of 3D boxes [x0, y0, z0, x1, y1, z1] (2D boxes as they are)."""
    boxes = np.asarray(boxes)
    return boxes[:, [0, 1, 3, 4]] if boxes.shape[-1] == 6 else boxes


def middle_slice(z0: int, z1: int) -> int:
    """The baseline's start slice for a box spanning [z0, z1]."""
    return int((z1 - z0) / 2 + z0)


def fixed_plan(boxes3d: np.ndarray) -> dict[int, list[int]]:
    """Slice -> indices of the boxes covering it (ascending), for the fixed-extent mode."""
    plan: dict[int, list[int]] = {}
    for i, b in enumerate(boxes3d):
        for z in range(int(b[2]), int(b[5]) + 1):
            plan.setdefault(z, []).append(i)
    return dict(sorted(plan.items()))


@dataclass
class PropagationPlan:
    """Two sweeps: up (middle slice to z_max, ascending) then down (z_mid-1 to z_min, descending)."""

    up: dict[int, list[int]]      # slice -> boxes whose upward chain visits it (ascending slices)
    down: dict[int, list[int]]    # slice -> boxes whose downward chain visits it (descending slices)
    middle: np.ndarray            # per box

    @property
    def slices(self) -> set[int]:
        return set(self.up) | set(self.down)

    def reused(self) -> set[int]:
        """Slices needed in both sweeps: their embeddings are kept between sweeps."""
        return set(self.up) & set(self.down)


def propagation_plan(boxes3d: np.ndarray) -> PropagationPlan:
    up: dict[int, list[int]] = {}
    down: dict[int, list[int]] = {}
    mids = np.array([middle_slice(int(b[2]), int(b[5])) for b in boxes3d], dtype=np.int64)
    for i, b in enumerate(boxes3d):
        for z in range(int(mids[i]), int(b[5]) + 1):
            up.setdefault(z, []).append(i)
        for z in range(int(mids[i]) - 1, int(b[2]) - 1, -1):
            down.setdefault(z, []).append(i)
    return PropagationPlan(dict(sorted(up.items())), dict(sorted(down.items(), reverse=True)), mids)
