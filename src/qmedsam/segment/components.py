"""26-connected components of a 3D mask, from 8-connected ones per slice (OpenCV) linked across
neighbouring slices: two slices' pieces touch in 26-connectivity when one, dilated by a 3x3 square,
meets the other.  The runtime has no SciPy; this works inside the mask's bounding box only."""
from __future__ import annotations

import cv2
import numpy as np

_SQUARE = np.ones((3, 3), np.uint8)


def label_3d(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """(labels int32 of ``mask``'s shape, 1..n per component, 0 outside; n)."""
    out = np.zeros(mask.shape, np.int32)
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    if len(zs) == 0:
        return out, 0
    rows = np.flatnonzero(mask.any(axis=(0, 2)))
    cols = np.flatnonzero(mask.any(axis=(0, 1)))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    parent: list[int] = [0]

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    prev, prev_z = None, None
    for z in zs:
        piece = np.ascontiguousarray(mask[z, r0:r1, c0:c1], np.uint8)
        n, lab = cv2.connectedComponents(piece, connectivity=8, ltype=cv2.CV_32S)
        base = len(parent) - 1
        parent.extend(range(base + 1, base + n))
        lab = np.where(lab > 0, lab + base, 0).astype(np.int32)
        if prev is not None and prev_z == z - 1:
            for a in range(base + 1, base + n):
                near = cv2.dilate((lab == a).astype(np.uint8), _SQUARE).astype(bool)
                for b in np.unique(prev[near]):
                    if b:
                        ra, rb = root(a), root(int(b))
                        if ra != rb:
                            parent[max(ra, rb)] = min(ra, rb)
        out[z, r0:r1, c0:c1] = lab
        prev, prev_z = lab, z
    roots = np.array([root(a) for a in range(len(parent))], np.int32)
    _, dense = np.unique(roots, return_inverse=True)
    labels = dense.astype(np.int32)[out]
    return labels, int(labels.max())
