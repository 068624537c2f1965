"""OpenCV's ``INTER_AREA`` and ``INTER_NEAREST`` resizing of uint8 images, in numpy, bit for bit.

The baseline preprocessing is ``cv2.resize(image, size, interpolation=cv2.INTER_AREA)``;
the runtime reproduces it exactly without OpenCV (which alone would take 137 MB of the
submission image).  ``tests/test_resize.py`` checks equality with OpenCV on many sizes.

OpenCV takes one of four routes for ``INTER_AREA``:

* same size: a copy;
* both scale factors integer (source = k x destination): block sums; for 2x2 blocks
  ``(sum + 2) >> 2``, otherwise ``round(sum * float32(1 / (kx * ky)))``;
* both factors >= 1 otherwise: each destination pixel is the area-weighted average of
  the source pixels its cell overlaps; weights are float32, the horizontal pass then the
  vertical pass accumulate in float32 in increasing source order, then round half to even;
* any factor < 1 (enlarging): linear interpolation with "area" coefficients
  (``fx = (dx + 1) - (sx + 1) / scale``, wrapped to [0, 1)), 11-bit fixed-point weights,
  and the vertical pass of OpenCV's 8-bit vector kernel
  ``((S0 >> 4) * b0 >> 16) + ((S1 >> 4) * b1 >> 16) + 2) >> 2``.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

COEF_SCALE = 2048          # OpenCV's INTER_RESIZE_COEF_SCALE (11 bits)


def _scale(n_src: int, n_dst: int) -> float:
    """Source pixels per destination pixel as OpenCV computes it: 1 / (dst / src), not src / dst
    (the two differ in the last bit, which moves floor() at exact multiples)."""
    return 1.0 / (n_dst / n_src)


@lru_cache(maxsize=64)
def _area_table(n_src: int, n_dst: int) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]:
    """Per step k: (dst indices, src indices, float32 weights); step k holds each cell's k-th term."""
    scale = _scale(n_src, n_dst)
    per_dst: list[list[tuple[int, float]]] = []
    for d in range(n_dst):
        f1 = d * scale
        f2 = f1 + scale
        cell = min(scale, n_src - f1)
        s2 = min(math.floor(f2), n_src - 1)
        s1 = min(math.ceil(f1), s2)
        terms = []
        if s1 - f1 > 1e-3:
            terms.append((s1 - 1, (s1 - f1) / cell))
        terms += [(s, 1.0 / cell) for s in range(s1, s2)]
        if f2 - s2 > 1e-3:
            terms.append((s2, min(min(f2 - s2, 1.0), cell) / cell))
        per_dst.append(terms)
    steps = []
    for k in range(max(len(t) for t in per_dst)):
        rows = [(d, t[k]) for d, t in enumerate(per_dst) if len(t) > k]
        steps.append((np.array([d for d, _ in rows]), np.array([s for _, (s, _) in rows]),
                      np.array([w for _, (_, w) in rows], dtype=np.float32)))
    return tuple(steps)


def _area_general(img: np.ndarray, w: int, h: int) -> np.ndarray:
    src = img.astype(np.float32)
    chan = (None,) * (img.ndim - 2)
    buf = np.zeros((img.shape[0], w) + img.shape[2:], np.float32)
    for d, s, a in _area_table(img.shape[1], w):
        buf[:, d] += src[:, s] * a[(None, slice(None)) + chan]
    out = np.zeros((h, w) + img.shape[2:], np.float32)
    for d, s, b in _area_table(img.shape[0], h):
        out[d] += buf[s] * b[(slice(None), None) + chan]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _area_blocks(img: np.ndarray, kx: int, ky: int) -> np.ndarray:
    h, w = img.shape[0] // ky, img.shape[1] // kx
    sums = img.reshape((h, ky, w, kx) + img.shape[2:]).sum(axis=(1, 3), dtype=np.int64)
    if kx == ky == 2:
        return ((sums + 2) >> 2).astype(np.uint8)
    scaled = sums.astype(np.float32) * np.float32(1.0 / (kx * ky))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


@lru_cache(maxsize=64)
def _linear_table(n_src: int, n_dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    inv, scale = n_dst / n_src, _scale(n_src, n_dst)
    idx, frac = [], []
    for d in range(n_dst):
        s = math.floor(d * scale)
        f = (d + 1) - (s + 1) * inv
        f = 0.0 if f <= 0 else f - math.floor(f)
        if s >= n_src - 1:
            s, f = n_src - 1, 0.0
        idx.append(s)
        frac.append(f)
    i0 = np.array(idx, np.int64)
    f = np.array(frac, np.float32)
    c0 = np.rint((np.float32(1) - f) * np.float32(COEF_SCALE)).astype(np.int64)
    c1 = np.rint(f * np.float32(COEF_SCALE)).astype(np.int64)
    return i0, np.minimum(i0 + 1, n_src - 1), c0, c1


def _area_enlarge(img: np.ndarray, w: int, h: int) -> np.ndarray:
    x0, x1, a0, a1 = _linear_table(img.shape[1], w)
    y0, y1, b0, b1 = _linear_table(img.shape[0], h)
    chan = (None,) * (img.ndim - 2)
    src = img.astype(np.int64)
    rows = src[:, x0] * a0[(None, slice(None)) + chan] + src[:, x1] * a1[(None, slice(None)) + chan]
    s0, s1 = rows[y0] >> 4, rows[y1] >> 4
    col = (slice(None), None) + chan
    out = ((s0 * b0[col] >> 16) + (s1 * b1[col] >> 16) + 2) >> 2
    return np.clip(out, 0, 255).astype(np.uint8)


def resize_area(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """``cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)`` for uint8 (H, W[, C])."""
    if img.dtype != np.uint8:
        raise TypeError(f"resize_area expects uint8, got {img.dtype}")
    src_h, src_w = img.shape[:2]
    if (src_h, src_w) == (height, width):
        return img.copy()
    sx, sy = _scale(src_w, width), _scale(src_h, height)
    if sx >= 1 and sy >= 1:
        kx, ky = int(round(sx)), int(round(sy))
        if abs(sx - kx) < np.finfo(float).eps and abs(sy - ky) < np.finfo(float).eps:
            return _area_blocks(img, kx, ky)
        return _area_general(img, width, height)
    return _area_enlarge(img, width, height)


def resize_nearest(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """``cv2.resize(..., interpolation=cv2.INTER_NEAREST)``: source index floor(d * src / dst)."""
    rows = np.minimum(np.floor(np.arange(height) * _scale(img.shape[0], height)).astype(np.int64), img.shape[0] - 1)
    cols = np.minimum(np.floor(np.arange(width) * _scale(img.shape[1], width)).astype(np.int64), img.shape[1] - 1)
    return img[rows][:, cols]
