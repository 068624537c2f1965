"""RECIST cases (FLARE 2025 task 1, the 2026 pan-cancer challenge), checked: each lesion's label drawn
as its longest diameter on one slice; and the box and reach a line gives its propagation."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def case_error(text: str):
    from qmedsam.cases.read import CaseError

    return CaseError(text)


@dataclass(frozen=True)
class Lesion:
    """One RECIST line: ``label`` drawn on slice ``z`` from ``ends[0]`` to ``ends[1]`` ((x, y) pixels)."""

    label: int
    z: int
    ends: np.ndarray

    @property
    def length(self) -> float:
        return float(np.hypot(*(self.ends[1] - self.ends[0])))


def _farthest_pair(xy: np.ndarray) -> np.ndarray:
    """The two points of a drawn line farthest apart (over its convex hull: a few points)."""
    if len(xy) == 1:
        return np.stack([xy[0], xy[0]]).astype(np.float64)
    hull = cv2.convexHull(xy.astype(np.int32)).reshape(-1, 2).astype(np.float64)
    d = ((hull[:, None] - hull[None]) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmax(d)), d.shape)
    return np.stack([hull[i], hull[j]])


def parse_recist(recist, shape) -> list[Lesion]:
    """The lesions of a ``recist`` volume of ``shape``: each nonzero label on exactly one slice."""
    recist = np.asarray(recist)
    if recist.shape != tuple(shape):
        raise case_error(f"recist has shape {recist.shape}, imgs {tuple(shape)}")
    if not np.issubdtype(recist.dtype, np.integer):
        raise case_error(f"recist has dtype {recist.dtype}, expected integer labels")
    flat = np.flatnonzero(recist)
    if len(flat) == 0:
        raise case_error("recist is empty: no lesion line is drawn")
    values = recist.reshape(-1)[flat]
    z, y, x = np.unravel_index(flat, recist.shape)
    lesions = []
    for label in np.unique(values):
        pick = values == label
        zs = np.unique(z[pick])
        if len(zs) != 1:
            raise case_error(f"recist label {int(label)} is drawn on {len(zs)} slices ({', '.join(map(str, zs[:4]))}"
                         f"{', ...' if len(zs) > 4 else ''}); a RECIST line lies on one slice")
        ends = _farthest_pair(np.stack([x[pick], y[pick]], 1))
        lesions.append(Lesion(int(label), int(zs[0]), ends))
    return lesions


# A RECIST line's prompt, as the FLARE 2025 baseline builds it: a square box centred on the line with
# the line's length as its side, and a reach of half that length above and below (in slices, by the
# spacing).  The segmenting code may stop earlier (qmedsam.segment.from_slice) or scale these.
RECIST_SIDE = 1.0          # box extent along the line / line length
RECIST_MINOR = 1.0         # box extent across the line / its extent along it (1: the baseline's square)
RECIST_REACH = 0.5         # z reach each way / line length (in mm)


def slice_steps(spacing, length_px: float, share: float) -> int:
    """Slices covered by ``share`` of an in-plane length of ``length_px`` pixels, by the spacing
    (array order z, y, x; none: isotropic)."""
    if spacing is None:
        return int(np.ceil(share * length_px))
    inplane = float(np.sqrt(spacing[1] * spacing[2]))
    return int(np.ceil(share * length_px * inplane / float(spacing[0])))


def square_box(centre, side: float, shape) -> np.ndarray:
    """(x0, y0, x1, y1) of a square of ``side`` px around ``centre`` (x, y), clipped to the slice."""
    half = max(side, 2.0) / 2
    cx, cy = centre
    _, height, width = shape
    return np.array([np.clip(round(cx - half), 0, width - 1), np.clip(round(cy - half), 0, height - 1),
                     np.clip(round(cx + half), 0, width - 1), np.clip(round(cy + half), 0, height - 1)], np.int64)


def lesion_box(lesion: Lesion, shape, side: float | None = None, minor: float | None = None) -> np.ndarray:
    """The pixel box around an ellipse on the line: ``side`` x the line's length along it, ``minor``
    of that across it (1, 1: the baseline's square, for a line at any angle)."""
    side = RECIST_SIDE if side is None else side
    minor = RECIST_MINOR if minor is None else minor
    (x0, y0), (x1, y1) = lesion.ends
    a = side * max(lesion.length, 2.0) / 2
    b = minor * a
    if minor >= 1.0:
        return square_box(lesion.ends.mean(0), 2 * a, shape)
    c, s = (x1 - x0) / max(lesion.length, 1e-9), (y1 - y0) / max(lesion.length, 1e-9)
    hx, hy = np.hypot(a * c, b * s), np.hypot(a * s, b * c)
    cx, cy = lesion.ends.mean(0)
    _, height, width = shape
    return np.array([np.clip(round(cx - hx), 0, width - 1), np.clip(round(cy - hy), 0, height - 1),
                     np.clip(round(cx + hx), 0, width - 1), np.clip(round(cy + hy), 0, height - 1)], np.int64)


def lesion_reach(lesion: Lesion, spacing, shape, reach: float | None = None) -> list[int]:
    """The (x0, y0, z0, x1, y1, z1) block a lesion's propagation may reach."""
    x0, y0, x1, y1 = lesion_box(lesion, shape)
    steps = slice_steps(spacing, lesion.length, RECIST_REACH if reach is None else reach)
    return [x0, y0, max(lesion.z - steps, 0), x1, y1, min(lesion.z + steps, shape[0] - 1)]
