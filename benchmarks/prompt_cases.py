"""Prompts made from ground truth as the successors' organisers make them, for ``make bench-prompts``
and the tests: RECIST lines (each object's longest diameter on its largest slice), interactive
round-1 boxes (the middle slice's box and the z range) and the next click (the heart of the
largest 26-connected error component)."""
from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

BOX_WIDEN = 5          # round-1 boxes are widened by 0..BOX_WIDEN px in 256-space, as the organisers'


def longest_diameter(mask2d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two (x, y) points of a 2D mask farthest apart (over its contour's convex hull)."""
    ys, xs = np.nonzero(mask2d)
    pts = np.stack([xs, ys], 1).astype(np.int32)
    hull = cv2.convexHull(pts).reshape(-1, 2)
    d = ((hull[:, None].astype(np.int64) - hull[None]) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmax(d)), d.shape)
    return hull[i], hull[j]


def recist_from_labels(labels: np.ndarray) -> np.ndarray:
    """A ``recist`` volume: each label's longest diameter drawn on the slice where its area is largest."""
    out = np.zeros(labels.shape, np.uint8)
    for value in (int(v) for v in np.unique(labels) if v):
        mask = labels == value
        z = int(np.argmax(mask.sum(axis=(1, 2))))
        a, b = longest_diameter(mask[z])
        plane = np.ascontiguousarray(out[z])
        cv2.line(plane, tuple(int(v) for v in a), tuple(int(v) for v in b), value, 1)
        out[z] = plane
    return out


def round1_boxes(labels: np.ndarray, seed: int = 42) -> list[dict]:
    """Per class 1..N the interactive round-1 box: the box of the class on its middle slice, widened
    by 0..5 px of 256-space, and its z range."""
    rng = np.random.default_rng(seed)
    d, h, w = labels.shape
    px = max(h, w) / 256
    out = []
    for value in range(1, int(labels.max()) + 1):
        mask = labels == value
        zs = np.flatnonzero(mask.any(axis=(1, 2)))
        if len(zs) == 0:
            out.append(None)
            continue
        z_mid = int((zs[0] + zs[-1]) // 2)
        if not mask[z_mid].any():
            z_mid = int(zs[np.argmin(np.abs(zs - z_mid))])
        ys, xs = np.nonzero(mask[z_mid])
        grow = rng.integers(0, BOX_WIDEN + 1, 4) * px
        out.append({"z_min": int(zs[0]), "z_max": int(zs[-1]), "z_mid": z_mid,
                    "z_mid_x_min": int(max(xs.min() - grow[0], 0)), "z_mid_y_min": int(max(ys.min() - grow[1], 0)),
                    "z_mid_x_max": int(min(xs.max() + grow[2], w - 1)),
                    "z_mid_y_max": int(min(ys.max() + grow[3], h - 1))})
    return out


def next_click(gt: np.ndarray, pred: np.ndarray, value: int, seed: int = 42):
    """('fg' | 'bg', (z, y, x)) at the voxel of the largest 26-connected error component of class
    ``value`` farthest from its border, or None where the class has no error."""
    truth, guess = gt == value, pred == value
    error = truth ^ guess
    if not error.any():
        return None
    comps, n = ndimage.label(error, structure=np.ones((3, 3, 3)))
    sizes = np.bincount(comps.ravel())
    sizes[0] = 0
    largest = comps == int(np.argmax(sizes))
    dist = ndimage.distance_transform_edt(np.pad(largest, 1))[1:-1, 1:-1, 1:-1]
    top = np.argwhere(dist == dist.max())
    zyx = tuple(int(v) for v in top[np.random.default_rng(seed).integers(len(top))])
    return ("fg" if truth[zyx] else "bg"), zyx


def object_array(items: list) -> np.ndarray:
    """A 1D object array of ``items`` (how the organisers store their lists of dicts)."""
    out = np.empty(len(items), object)
    for i, item in enumerate(items):
        out[i] = item
    return out
