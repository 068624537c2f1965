"""The one preprocessing implementation, shared by runtime, export and training.

Follows the challenge baseline (see the reference doc): resize so the longest
side is 256 (OpenCV's INTER_AREA on uint8), min-max normalise the resized image to
[0, 1], zero-pad bottom/right to 256x256, boxes scaled by 256/max(H, W) and
truncated.  Post-processing crops the 256x256 logits to the resized extent and
up-samples bilinearly (align_corners=False) to the original size (:mod:`qmedsam.image.masks`).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from qmedsam.image.masks import upsample_full

MODEL_SIZE = 256


@dataclass(frozen=True)
class Geometry:
    """How an (H, W) image maps into the 256x256 model frame."""

    height: int
    width: int

    @property
    def scale(self) -> float:
        return MODEL_SIZE / max(self.height, self.width)

    @property
    def resized(self) -> tuple[int, int]:
        """(new_h, new_w) of the resized image inside the padded frame."""
        s = self.scale
        return int(self.height * s + 0.5), int(self.width * s + 0.5)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 1|3) uint8 -> (H, W, 3) uint8."""
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"expected (H, W) or (H, W, 3) image, got shape {image.shape}")


def image_to_tensor(image: np.ndarray) -> tuple[np.ndarray, Geometry]:
    """uint8 (H, W) or (H, W, 3) -> float32 (1, 3, 256, 256) model input and its geometry."""
    rgb = to_rgb(image)
    geo = Geometry(rgb.shape[0], rgb.shape[1])
    new_h, new_w = geo.resized
    small = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA).astype(np.float32)
    lo, hi = float(small.min()), float(small.max())
    small = (small - lo) / max(hi - lo, 1e-8)
    out = np.zeros((1, 3, MODEL_SIZE, MODEL_SIZE), dtype=np.float32)
    out[0, :, :new_h, :new_w] = small.transpose(2, 0, 1)
    return out, geo


def canvas_to_tensor(image: np.ndarray, placed) -> np.ndarray:
    """Windows of ``image`` resized into tiles of one 256x256 canvas (``placed``: the
    :class:`qmedsam.image.zoom.Placed` tiles of a canvas), min-max normalised together, zero elsewhere.
    A canvas of one window at (0, 0) equals :func:`image_to_tensor` of that window."""
    rgb = to_rgb(image)
    tiles = []
    for p in placed:
        t = p.tile
        h, w = t.size
        tiles.append(cv2.resize(rgb[t.y0:t.y1, t.x0:t.x1], (w, h), interpolation=cv2.INTER_AREA).astype(np.float32))
    lo, hi = min(float(a.min()) for a in tiles), max(float(a.max()) for a in tiles)
    out = np.zeros((1, 3, MODEL_SIZE, MODEL_SIZE), dtype=np.float32)
    for p, a in zip(placed, tiles):
        h, w = a.shape[:2]
        out[0, :, p.y:p.y + h, p.x:p.x + w] = ((a - lo) / max(hi - lo, 1e-8)).transpose(2, 0, 1)
    return out


def boxes_to_model(boxes: np.ndarray, geo: Geometry) -> np.ndarray:
    """(N, 4) [x0, y0, x1, y1] pixel boxes -> float32 (N, 1, 4) in 256-space (truncated)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scaled = np.floor(b * MODEL_SIZE / max(geo.height, geo.width))
    return scaled.astype(np.float32).reshape(-1, 1, 4)


def boxes_to_canvas(boxes: np.ndarray, p) -> np.ndarray:
    """(N, 4) pixel boxes inside the placed tile ``p``'s window -> float32 (N, 1, 4) in its canvas
    (truncated, as :func:`boxes_to_model`)."""
    t = p.tile
    local = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) - [t.x0, t.y0, t.x0, t.y0]
    return (np.floor(local * t.zoom) + [p.x, p.y, p.x, p.y]).astype(np.float32).reshape(-1, 1, 4)


def logits_to_mask(logits: np.ndarray, geo: Geometry) -> np.ndarray:
    """One (256, 256) logit map -> bool (H, W) mask at the original resolution."""
    new_h, new_w = geo.resized
    crop = np.ascontiguousarray(logits[:new_h, :new_w], dtype=np.float32)
    return upsample_full(crop, geo.height, geo.width) > 0


def mask_to_model(mask: np.ndarray, geo: Geometry) -> np.ndarray:
    """bool/int (H, W) mask -> uint8 (256, 256) target in the model frame (nearest resize, zero pad).

    The training target for the 256x256 low-res logits; the inverse of :func:`logits_to_mask`.
    """
    new_h, new_w = geo.resized
    small = cv2.resize(np.ascontiguousarray(mask, np.uint8), (new_w, new_h), interpolation=cv2.INTER_NEAREST)
    out = np.zeros((MODEL_SIZE, MODEL_SIZE), np.uint8)
    out[:new_h, :new_w] = small
    return out
