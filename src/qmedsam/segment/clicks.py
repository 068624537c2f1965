"""A click round: the previous label map edited where the newest click of each class says it is wrong.

LiteMedSAM was fine-tuned with boxes only and its point prompts no longer mean anything (see
docs/decisions/prompts.md), so a click acts through the structure of the problem.  The organisers
click at the heart of the largest error, so a click tells which error it is:

- foreground beyond the object's last (or before its first) slice: the object goes on; it is
  followed from its end slice to the click's slice and on while the model still finds it;
- foreground on a slice inside the object's range: that slice is decoded again with a box grown to
  hold the click (and the neighbours' masks where the slice was empty);
- background in a component of the class that is not its largest: that component goes;
- background deep inside the class's mask on its slice (the whole slice is wrong): the object ends
  there, on the side of the click away from the object's centre;
- background near the mask's edge: that slice is decoded again with the box edge nearest the click
  moved to it, kept only if the new mask leaves the click out.

Only the slices a click changes are encoded; the rest of ``prev_pred`` stays as it was.
"""
from __future__ import annotations

import cv2
import numpy as np

from qmedsam.cases.interactive import click_box
from qmedsam.image.preprocess import Geometry, boxes_to_model
from qmedsam.segment.components import label_3d
from qmedsam.segment.from_slice import Track, follow

DEEP = 0.5          # a background click this deep in its slice's mask (of the deepest point) ends the object
MARGIN = 5          # px added around a click when a box grows to hold it


def bbox(mask2d: np.ndarray):
    rows, cols = np.flatnonzero(mask2d.any(1)), np.flatnonzero(mask2d.any(0))
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], np.int64)


def _grow(box, y, x, shape):
    h, w = shape
    b = np.array([min(box[0], x - MARGIN), min(box[1], y - MARGIN), max(box[2], x + MARGIN), max(box[3], y + MARGIN)])
    return np.clip(b, 0, [w - 1, h - 1, w - 1, h - 1])


def _to_model(box, geo):
    return boxes_to_model(np.asarray(box)[None], geo)[0, 0]


def _redo_slice(run, seg, label, z, box, geo, keep=None) -> bool:
    """Decode slice ``z`` with pixel ``box`` and replace class ``label`` there by the mask, if
    ``keep(mask)`` (default: always); returns whether it was replaced."""
    scratch = np.zeros((1, *seg.shape[1:]), seg.dtype)
    t = Track(label, 0, _to_model(box, geo), 0, 0, must_hi=0)
    follow(_OneSlice(run, z), [t], scratch)
    new = scratch[0] == label
    if keep is not None and not keep(new):
        return False
    plane = seg[z]
    plane[plane == label] = 0
    plane[new & (plane == 0)] = label
    return True


class _OneSlice:
    """``run`` seen as a one-slice volume of its slice ``z`` (for :func:`follow`)."""

    def __init__(self, run, z: int):
        self._run, self._z = run, z
        self.case = type("OneSliceCase", (), {"image": run.case.image[z:z + 1]})()
        self.predictor, self.opts = run.predictor, run.opts

    def slices(self, zs, overlap=None):
        for _ in zs:
            yield from self._run.slices([self._z], overlap=False)


def foreground(run, seg, label, zyx, geo) -> str:
    z, y, x = zyx
    mask = seg == label
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    depth = seg.shape[0]
    if len(zs) == 0 or z > zs[-1] or z < zs[0]:
        if len(zs) == 0:
            box, start, lo, hi = click_box(zyx, seg.shape), z, 0, depth - 1
            track = Track(label, start, _to_model(box, geo), lo, hi)
            what = "started"
        elif z > zs[-1]:
            box = _grow(bbox(mask[zs[-1]]), y, x, seg.shape[1:]) if z == zs[-1] + 1 else bbox(mask[zs[-1]])
            track = Track(label, int(zs[-1]) + 1, _to_model(box, geo), int(zs[-1]) + 1, depth - 1, must_hi=z)
            what = "extended up"
        else:
            box = _grow(bbox(mask[zs[0]]), y, x, seg.shape[1:]) if z == zs[0] - 1 else bbox(mask[zs[0]])
            track = Track(label, int(zs[0]) - 1, _to_model(box, geo), 0, int(zs[0]) - 1, must_lo=z)
            what = "extended down"
        scratch = np.zeros_like(seg)
        follow(run, [track], scratch)
        free = (scratch == label) & (seg == 0)
        seg[free] = label
        return what
    if mask[z].any():
        box = _grow(bbox(mask[z]), y, x, seg.shape[1:])
    else:                                  # a gap slice: its nearest neighbours' masks
        near = zs[np.argsort(np.abs(zs - z))[:2]]
        box = _grow(bbox(mask[near].any(0)), y, x, seg.shape[1:])
    _redo_slice(run, seg, label, z, box, geo)
    return "slice redone"


def background(run, seg, label, zyx, geo) -> str:
    z, y, x = zyx
    mask = seg == label
    if not mask[z, y, x]:
        return "nothing to remove"
    parts, n = label_3d(mask)
    hit = parts[z, y, x]
    if n > 1:
        sizes = np.bincount(parts.ravel(), minlength=n + 1)
        sizes[0] = 0
        if hit != int(np.argmax(sizes)):
            seg[parts == hit] = 0
            return "stray part removed"
    plane = mask[z].astype(np.uint8)
    dist = cv2.distanceTransform(plane, cv2.DIST_L2, 3)
    if dist[y, x] >= DEEP * dist.max():
        part = parts == hit
        areas = part.sum(axis=(1, 2)).astype(np.float64)
        centre = float((areas * np.arange(len(areas))).sum() / areas.sum())
        cut = slice(z, None) if z >= centre else slice(0, z + 1)
        seg[cut][part[cut]] = 0
        return "object ended"
    box = bbox(mask[z])
    sides = np.array([x - box[0], y - box[1], box[2] - x, box[3] - y])
    side = int(np.argmin(sides))
    edit = box.copy()
    edit[side] = [x + 1, y + 1, x - 1, y - 1][side]
    if edit[2] < edit[0] or edit[3] < edit[1]:
        return "left as it was"
    kept = _redo_slice(run, seg, label, z, edit, geo, keep=lambda new: not new[y, x])
    return "slice redone" if kept else "left as it was"


def click_round(run, seg: np.ndarray, round_) -> list[str]:
    """Apply each class's newest click of ``round_`` (an Interactive) to ``seg`` (a copy of
    ``prev_pred``) in place; returns what each did."""
    geo = Geometry(*seg.shape[1:])
    done = []
    for k in range(round_.classes):
        newest = round_.newest(k)
        if newest is None:
            continue
        kind, zyx = newest
        act = foreground if kind == "fg" else background
        done.append(f"class {k + 1} {kind}: {act(run, seg, k + 1, zyx, geo)}")
    return done
