"""A click round: the previous label map edited where the newest click of each class says it is wrong.

LiteMedSAM was fine-tuned with boxes only and its point prompts no longer mean anything
(docs/decisions/prompts.md), so a click acts through the structure of the problem.  The organisers
click at the heart of the largest error, and a round-1 box tells the object's z range, so:

- a background click in a part of the class that is not its largest removes that part;
- a click on a slice inside the object's known z range is an error in that slice's plane: the
  slice is decoded again with a few candidate boxes (the mask's box with the edge nearest a
  background click moved past it, the box grown to hold a foreground click, the neighbouring
  slices' box), and the candidate the decoder rates best among those that put the click on the
  right side replaces the class there; none does: the slice stays as it was;
- where the z range is not known (a class started from a click): a foreground click past the
  object's end extends it there and on while the model finds it; a background click deep inside
  its slice's mask (the whole slice is wrong) ends the object there.

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
IN_PLANE = True     # clicks inside the object's range redo their slice (else only the z rules act)
REDO = True         # try the decoder's candidates before the ball edit
BALL = 1.0          # the ball edited around a click: this share of the click's distance to the mask's edge
KEEP = (0.7, 1.5)   # a redone slice's mask may shrink (background) / grow (foreground) at most to these shares


def bbox(mask2d: np.ndarray):
    rows, cols = np.flatnonzero(mask2d.any(1)), np.flatnonzero(mask2d.any(0))
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], np.int64)


def _grow(box, y, x, shape):
    h, w = shape
    b = np.array([min(box[0], x - MARGIN), min(box[1], y - MARGIN), max(box[2], x + MARGIN), max(box[3], y + MARGIN)])
    return np.clip(b, 0, [w - 1, h - 1, w - 1, h - 1])


def _to_model(box, geo):
    return boxes_to_model(np.asarray(box)[None], geo)[0, 0]


def _candidates(run, z: int, boxes: list, geo) -> tuple[np.ndarray, np.ndarray]:
    """(masks (B, H, W), predicted IoU (B,)) of pixel ``boxes`` on slice ``z``, in one decoder call."""
    for _, emb in run.slices([z], overlap=False):
        run.predictor.set_embedding(emb, geo)
    return run.predictor.predict(np.asarray(boxes, np.int64).reshape(-1, 4))


def _replace(seg, label: int, z: int, new: np.ndarray) -> None:
    """Class ``label`` on slice ``z`` becomes ``new`` (other classes keep their pixels)."""
    plane = seg[z]
    plane[plane == label] = 0
    plane[new & (plane == 0)] = label


def _near_box(mask, z: int):
    """The box of the class on the nearest slice holding it on each side of ``z``, or None."""
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    below, above = zs[zs < z], zs[zs > z]
    near = [int(v[i]) for v, i in ((below, -1), (above, 0)) if len(v)]
    return bbox(mask[near].any(0)) if near else None


def _redo(run, seg, label, z, boxes, geo, right) -> bool:
    """Slice ``z`` redone with the best-rated candidate whose mask satisfies ``right``."""
    boxes = [b for b in boxes if b is not None and b[2] >= b[0] and b[3] >= b[1]]
    if not boxes:
        return False
    masks, ious = _candidates(run, z, boxes, geo)
    good = [i for i in range(len(boxes)) if right(masks[i])]
    if not good:
        return False
    _replace(seg, label, z, masks[max(good, key=lambda i: ious[i])])
    return True


def _ball(seg, label: int, zyx, inside: bool, spacing) -> None:
    """Give (foreground) or take (background) class ``label`` a ball around the click: the
    organisers click where the error is deepest, so the error holds a ball as deep as the click;
    its radius is taken as :data:`BALL` of the click's in-plane distance to the mask's edge."""
    z, y, x = zyx
    plane = (seg[z] == label) if inside else (seg[z] != label)
    radius = BALL * float(cv2.distanceTransform(plane.astype(np.uint8), cv2.DIST_L2, 3)[y, x])
    if radius < 1:
        radius = 1.0
    ratio = 1.0 if spacing is None else float(spacing[0] / np.sqrt(spacing[1] * spacing[2]))
    reach = int(radius / ratio)
    for zz in range(max(z - reach, 0), min(z + reach, seg.shape[0] - 1) + 1):
        r2 = radius ** 2 - ((zz - z) * ratio) ** 2
        if r2 <= 0:
            continue
        yy, xx = np.ogrid[:seg.shape[1], :seg.shape[2]]
        disk = (yy - y) ** 2 + (xx - x) ** 2 <= r2
        sl = seg[zz]
        if inside:
            sl[disk & (sl == label)] = 0
        else:
            sl[disk & (sl == 0)] = label


def _in_plane_fg(run, seg, label, zyx, geo) -> str:
    z, y, x = zyx
    mask = seg == label
    shape = seg.shape[1:]
    near = _near_box(mask, z)
    area = mask[z].sum()
    boxes = [_grow(bbox(mask[z]), y, x, shape) if mask[z].any() else None,
             _grow(near, y, x, shape) if near is not None else None]
    if REDO and _redo(run, seg, label, z, boxes, geo,
                      lambda m: m[y, x] and area <= m.sum() <= KEEP[1] * max(area, 1) or m[y, x] and not area):
        return "slice redone"
    _ball(seg, label, zyx, False, run.case.spacing)
    return "ball added"


def _in_plane_bg(run, seg, label, zyx, geo) -> str:
    z, y, x = zyx
    mask = seg == label
    box = bbox(mask[z])
    area = mask[z].sum()
    boxes = [_near_box(mask, z)]
    for side, edge in enumerate((x + 1, y + 1, x - 1, y - 1)):
        edit = box.copy()
        edit[side] = edge
        boxes.append(edit)
    if REDO and _redo(run, seg, label, z, boxes, geo, lambda m: not m[y, x] and KEEP[0] * area <= m.sum() <= area):
        return "slice redone"
    _ball(seg, label, zyx, True, run.case.spacing)
    return "ball removed"


def foreground(run, seg, label, zyx, geo, known=None) -> str:
    z, y, x = zyx
    mask = seg == label
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    depth = seg.shape[0]
    lo, hi = known if known is not None else (0, depth - 1)
    if len(zs) == 0 or z > zs[-1] or z < zs[0]:
        if len(zs) == 0:
            track = Track(label, z, _to_model(click_box(zyx, seg.shape), geo), lo, hi)
            what = "started"
        elif z > zs[-1]:
            box = _grow(bbox(mask[zs[-1]]), y, x, seg.shape[1:]) if z == zs[-1] + 1 else bbox(mask[zs[-1]])
            track = Track(label, int(zs[-1]) + 1, _to_model(box, geo), int(zs[-1]) + 1, max(hi, z), must_hi=z)
            what = "extended up"
        else:
            box = _grow(bbox(mask[zs[0]]), y, x, seg.shape[1:]) if z == zs[0] - 1 else bbox(mask[zs[0]])
            track = Track(label, int(zs[0]) - 1, _to_model(box, geo), min(lo, z), int(zs[0]) - 1, must_lo=z)
            what = "extended down"
        scratch = np.zeros_like(seg)
        follow(run, [track], scratch)
        free = (scratch == label) & (seg == 0)
        seg[free] = label
        return what
    return _in_plane_fg(run, seg, label, zyx, geo) if IN_PLANE else "left as it was"


def background(run, seg, label, zyx, geo, known=None) -> str:
    z, y, x = zyx
    mask = seg == label
    if not mask[z, y, x]:
        return "nothing to remove"
    if known is not None and not known[0] <= z <= known[1]:      # past the round-1 box's z range
        cut = slice(known[1] + 1, None) if z > known[1] else slice(0, known[0])
        seg[cut][mask[cut]] = 0
        return "cut to the box's z range"
    parts, n = label_3d(mask)
    hit = parts[z, y, x]
    if n > 1:
        sizes = np.bincount(parts.ravel(), minlength=n + 1)
        sizes[0] = 0
        if hit != int(np.argmax(sizes)):
            seg[parts == hit] = 0
            return "stray part removed"
    if known is None:
        dist = cv2.distanceTransform(mask[z].astype(np.uint8), cv2.DIST_L2, 3)
        if dist[y, x] >= DEEP * dist.max():
            part = parts == hit
            areas = part.sum(axis=(1, 2)).astype(np.float64)
            centre = float((areas * np.arange(len(areas))).sum() / areas.sum())
            cut = slice(z, None) if z >= centre else slice(0, z + 1)
            seg[cut][part[cut]] = 0
            return "object ended"
    return _in_plane_bg(run, seg, label, zyx, geo) if IN_PLANE else "left as it was"


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
        b = round_.boxes[k] if k < len(round_.boxes) else None
        known = (b.lo, b.hi) if b is not None and b.known else None
        done.append(f"class {k + 1} {kind}: {act(run, seg, k + 1, zyx, geo, known)}")
    return done
