"""Up-sampling low-res mask logits to the original grid and pasting them into a label map.

Bilinear interpolation (align_corners=False, as cv2/torch) makes each output pixel from two source
pixels per axis, so only the output window around the positive logits is interpolated: bit for
bit the whole up-sampling (:func:`upsample_full`), at a fraction of the cost on small structures.
Where masks overlap a pixel goes to the box with the highest logit there, whatever the order
(:func:`paste_mask`); why: docs/predictor.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class Axis:
    """Bilinear sampling positions of one axis: out[j] = (1-w[j])*in[i0[j]] + w[j]*in[i1[j]]."""

    i0: np.ndarray
    i1: np.ndarray
    w: np.ndarray


@lru_cache(maxsize=16)
def make_axis(n_in: int, n_out: int) -> Axis:
    src = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return Axis(i0, i1, (src - i0).astype(np.float32))


def _span(axis: Axis, first: int, last: int) -> tuple[int, int]:
    """Output index range [lo, hi) whose lower neighbour i0 lies in [first - 1, last]."""
    lo = int(np.searchsorted(axis.i0, first - 1, side="left"))
    hi = int(np.searchsorted(axis.i0, last, side="right"))
    return lo, hi


def interpolate(src: np.ndarray, ay: Axis, ax: Axis, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """Bilinear values of output[rows[0]:rows[1], cols[0]:cols[1]] (rows first, then columns)."""
    r0, r1 = rows
    c0, c1 = cols
    s0, s1 = int(ax.i0[c0]), int(ax.i1[c1 - 1]) + 1
    wy = ay.w[r0:r1, None]
    tmp = src[ay.i0[r0:r1], s0:s1] * (1 - wy) + src[ay.i1[r0:r1], s0:s1] * wy
    wx = ax.w[c0:c1]
    return tmp[:, ax.i0[c0:c1] - s0] * (1 - wx) + tmp[:, ax.i1[c0:c1] - s0] * wx


def upsample_full(crop: np.ndarray, height: int, width: int) -> np.ndarray:
    """The whole (height, width) bilinear up-sampling of a cropped logit map (reference path)."""
    ay, ax = make_axis(crop.shape[0], height), make_axis(crop.shape[1], width)
    return interpolate(crop.astype(np.float32, copy=False), ay, ax, (0, height), (0, width))


def positive_bounds(crop: np.ndarray):
    """(row0, row1, col0, col1), inclusive, of the positive logits, or None when there are none."""
    pos = crop > 0
    rows = np.flatnonzero(pos.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(pos.any(axis=0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def positive_window(crop: np.ndarray, height: int, width: int):
    """Output rows/cols that can hold positive values, or None when no logit is positive."""
    bounds = positive_bounds(crop)
    if bounds is None:
        return None
    ay, ax = make_axis(crop.shape[0], height), make_axis(crop.shape[1], width)
    r = _span(ay, bounds[0], bounds[1])
    c = _span(ax, bounds[2], bounds[3])
    if r[0] >= r[1] or c[0] >= c[1]:
        return None
    return r, c


def confidence_map(shape, dtype=np.float32) -> np.ndarray:
    """The best logit pasted so far per pixel, for :func:`paste_mask` (zero: no claim yet)."""
    return np.zeros(shape, dtype=dtype)


def window_logits(crop: np.ndarray, height: int, width: int):
    """((r0, r1), (c0, c1), logits): one cropped logit map up-sampled to (height, width) over its
    positive window only, or None when no logit is positive."""
    window = positive_window(crop, height, width)
    if window is None:
        return None
    (r0, r1), (c0, c1) = window
    ay, ax = make_axis(crop.shape[0], height), make_axis(crop.shape[1], width)
    return (r0, r1), (c0, c1), interpolate(crop.astype(np.float32, copy=False), ay, ax, (r0, r1), (c0, c1))


def box_mask(crop: np.ndarray, height: int, width: int) -> np.ndarray:
    """The (height, width) boolean mask of one box's cropped logits: what :func:`paste_mask` gives
    that box alone."""
    mask = np.zeros((height, width), bool)
    got = window_logits(crop, height, width)
    if got is not None:
        (r0, r1), (c0, c1), values = got
        mask[r0:r1, c0:c1] = values > 0
    return mask


def paste_mask(seg: np.ndarray, crop: np.ndarray, label: int, best: np.ndarray) -> None:
    """Up-sample one cropped logit map onto ``seg`` (H, W) over its positive window only; a pixel
    takes ``label`` where its logit is positive and at least ``best`` (H, W), which is updated."""
    got = window_logits(crop, *seg.shape)
    if got is None:
        return
    (r0, r1), (c0, c1), values = got
    claim = best[r0:r1, c0:c1]
    wins = (values > 0) & (values >= claim)            # a tie (identical masks): the later box wins
    seg[r0:r1, c0:c1][wins] = label
    claim[wins] = values[wins]
