"""Interactive rounds (CVPR 2025), checked: round-1 boxes as dicts, clicks in (z, y, x) array order,
their order, and the previous round's label map; all in array indices."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from qmedsam.cases.recist import case_error, square_box

BOX_KEYS = ("z_min", "z_max", "z_mid", "z_mid_x_min", "z_mid_y_min", "z_mid_x_max", "z_mid_y_max")
CLICK_SIDE = 0.1           # a class that starts from a click: a square box of this share of the slice


@dataclass(frozen=True)
class SliceBox:
    """An interactive round-1 box: (x0, y0, x1, y1) on slice ``z`` and the z range [lo, hi]; ``known``:
    the object spans all of that range (the organisers' boxes), else it may end inside it."""

    z: int
    box: np.ndarray
    lo: int
    hi: int
    known: bool = True


@dataclass
class Interactive:
    """One interactive round of a case with ``classes`` classes (label k = class k, 1-based)."""

    classes: int
    boxes: list[SliceBox | None]                       # per class; None: that class starts from clicks
    clicks: list[dict] = field(default_factory=list)   # per class {'fg': [(z, y, x)], 'bg': [...]}
    order: list[list] = field(default_factory=list)    # per class, 'fg' / 'bg' / None in click order
    prev: np.ndarray | None = None                     # the previous round's label map

    def newest(self, k: int):
        """Class ``k``'s (0-based) last click as ('fg' | 'bg', (z, y, x)), or None."""
        if k >= len(self.clicks):
            return None
        order = [o for o in (self.order[k] if k < len(self.order) else []) if o in ("fg", "bg")]
        c = self.clicks[k]
        if order:
            kind = order[-1]
            if c.get(kind):
                return kind, c[kind][-1]
        for kind in ("fg", "bg"):            # no order given: a lone click
            if c.get(kind) and not c.get("bg" if kind == "fg" else "fg"):
                return kind, c[kind][-1]
        return None


def _as_list(value, what: str) -> list:
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject or value.ndim == 1:
            return list(value.ravel()) if value.ndim <= 1 else [v for v in value]
        return [v for v in value]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise case_error(f"{what} is a {type(value).__name__}, expected a list per class")


def _whole(value, what: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise case_error(f"{what} is {value!r}, not a number") from None
    if not np.isfinite(number):
        raise case_error(f"{what} is not finite")
    return int(round(number))


def _slice_box(d, k: int, shape) -> SliceBox | None:
    if d is None:
        return None
    if not isinstance(d, dict):
        raise case_error(f"boxes: class {k + 1} is a {type(d).__name__}, expected a dict with {', '.join(BOX_KEYS)}")
    missing = [key for key in BOX_KEYS if key not in d]
    if missing:
        raise case_error(f"boxes: class {k + 1} lacks {', '.join(missing)}")
    v = {key: _whole(d[key], f"boxes: class {k + 1} {key}") for key in BOX_KEYS}
    depth, height, width = shape
    lo, hi, z = v["z_min"], v["z_max"], v["z_mid"]
    box = np.array([v["z_mid_x_min"], v["z_mid_y_min"], v["z_mid_x_max"], v["z_mid_y_max"]], np.int64)
    if not (0 <= lo <= z <= hi < depth):
        raise case_error(f"boxes: class {k + 1} z range {lo}..{hi} (middle {z}) does not fit {depth} slices")
    if box[2] < box[0] or box[3] < box[1] or box[2] < 0 or box[3] < 0 or box[0] >= width or box[1] >= height:
        raise case_error(f"boxes: class {k + 1} box {box.tolist()} lies outside the {width}x{height} slice or is empty")
    box = np.clip(box, 0, [width - 1, height - 1, width - 1, height - 1])
    return SliceBox(z, box, lo, hi)


def _clicks(c, k: int, shape) -> dict:
    if c is None:
        return {"fg": [], "bg": []}
    if not isinstance(c, dict):
        raise case_error(f"clicks: class {k + 1} is a {type(c).__name__}, expected {{'fg': [...], 'bg': [...]}}")
    out = {}
    for kind in ("fg", "bg"):
        points = []
        for p in _as_list(c.get(kind), f"clicks: class {k + 1} {kind}"):
            zyx = np.asarray(p, dtype=np.float64).reshape(-1)
            if zyx.shape != (3,) or not np.isfinite(zyx).all():
                raise case_error(f"clicks: class {k + 1} {kind} click {np.asarray(p).tolist()} is not three indices (z, y, x)")
            zyx = tuple(int(round(v)) for v in zyx)
            if not all(0 <= v < n for v, n in zip(zyx, shape)):
                raise case_error(f"clicks: class {k + 1} {kind} click {list(zyx)} (z, y, x) lies outside the volume "
                             f"{tuple(shape)}")
            points.append(zyx)
        out[kind] = points
    return out


def parse_interactive(members: dict, shape) -> Interactive:
    """An interactive round from a file's ``boxes`` (dicts), ``clicks``, ``clicks_order`` and
    ``prev_pred`` members (any may be missing, not all)."""
    boxes = _as_list(members.get("boxes"), "boxes")
    clicks = _as_list(members.get("clicks"), "clicks")
    order = _as_list(members.get("clicks_order"), "clicks_order")
    classes = max(len(boxes), len(clicks))
    if classes == 0:
        raise case_error("no boxes and no clicks: nothing to segment")
    if classes > 255:
        raise case_error(f"{classes} classes; the interactive output is uint8 (at most 255)")
    parsed_boxes = [_slice_box(boxes[k] if k < len(boxes) else None, k, shape) for k in range(classes)]
    parsed_clicks = [_clicks(clicks[k] if k < len(clicks) else None, k, shape) for k in range(classes)]
    parsed_order = [_as_list(o, f"clicks_order: class {k + 1}") for k, o in enumerate(order)]
    prev = members.get("prev_pred")
    if prev is not None:
        prev = np.asarray(prev)
        if prev.shape != tuple(shape):
            raise case_error(f"prev_pred has shape {prev.shape}, imgs {tuple(shape)}")
        if not np.issubdtype(prev.dtype, np.integer) and prev.dtype != bool:
            raise case_error(f"prev_pred has dtype {prev.dtype}, expected integer labels")
        prev = prev.astype(np.uint8)
    if all(b is None for b in parsed_boxes) and not any(c["fg"] for c in parsed_clicks) and prev is None:
        raise case_error("no boxes, no foreground click and no prev_pred: nothing to start from")
    return Interactive(classes, parsed_boxes, parsed_clicks, parsed_order, prev)


def click_box(zyx, shape) -> np.ndarray:
    _, height, width = shape
    return square_box((zyx[2], zyx[1]), CLICK_SIDE * max(height, width), shape)


def interactive_reach(round_: Interactive, shape) -> list[list[int]]:
    """Per class, the block a round may touch: the box and its z range in round 1, a click's box on
    its slice in a click round (what the precision plan counts as work)."""
    out = []
    for k in range(round_.classes):
        newest = round_.newest(k)
        if round_.prev is not None and newest is not None:
            z = newest[1][0]
            x0, y0, x1, y1 = click_box(newest[1], shape)
            out.append([x0, y0, z, x1, y1, z])
        elif round_.boxes[k] is not None:
            b = round_.boxes[k]
            out.append([b.box[0], b.box[1], b.lo, b.box[2], b.box[3], b.hi])
        elif round_.clicks[k]["fg"]:
            zyx = round_.clicks[k]["fg"][0]
            x0, y0, x1, y1 = click_box(zyx, shape)
            out.append([x0, y0, zyx[0], x1, y1, zyx[0]])
    return out
