"""PNG montages of image, boxes and masks for a quick look (one per case)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from qmedsam.cases.atomic import replacing
from qmedsam.image.preprocess import to_rgb
from qmedsam.segment.plan3d import box_xy, middle_slice

TILE = 384


def _palette(n: int) -> np.ndarray:
    """(n, 3) uint8 RGB colours: golden-ratio hues, saturation 0.86, full value."""
    h = (np.arange(max(n, 1)) * 0.61803398875 % 1.0) * 6.0
    s, v = 220 / 255, 1.0
    i = np.floor(h).astype(int) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack([np.stack(c, axis=1) for c in (
        (np.full_like(f, v), t, np.full_like(f, p)), (q, np.full_like(f, v), np.full_like(f, p)),
        (np.full_like(f, p), np.full_like(f, v), t), (np.full_like(f, p), q, np.full_like(f, v)),
        (t, np.full_like(f, p), np.full_like(f, v)), (np.full_like(f, v), np.full_like(f, p), q))], axis=0)
    return np.round(table[i, np.arange(len(i))] * 255).astype(np.uint8)


def _rectangle(img: np.ndarray, p0, p1, colour) -> None:
    h, w = img.shape[:2]
    x0, y0 = max(0, min(p0[0], w - 1)), max(0, min(p0[1], h - 1))
    x1, y1 = max(0, min(p1[0], w - 1)), max(0, min(p1[1], h - 1))
    img[y0, x0:x1 + 1] = colour
    img[y1, x0:x1 + 1] = colour
    img[y0:y1 + 1, x0] = colour
    img[y0:y1 + 1, x1] = colour


def draw(image: np.ndarray, seg: np.ndarray, boxes: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB tile: image, label colours blended in, box outlines."""
    colours = _palette(int(max(seg.max(), len(boxes))) + 1)
    out = to_rgb(image).astype(np.float32)
    mask = seg > 0
    out[mask] = (1 - alpha) * out[mask] + alpha * colours[seg[mask].astype(np.int64) - 1]
    out = out.astype(np.uint8)
    s = TILE / max(out.shape[:2])
    out = cv2.resize(out, (max(1, round(out.shape[1] * s)), max(1, round(out.shape[0] * s))),
                     interpolation=cv2.INTER_NEAREST)
    for i, b in enumerate(boxes):
        _rectangle(out, (int(b[0] * s), int(b[1] * s)), (int((b[2] + 1) * s), int((b[3] + 1) * s)), colours[i])
    return out


def write_png(path: Path, rgb: np.ndarray) -> None:
    """An RGB image as a PNG file (OpenCV, written atomically)."""
    with replacing(path, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(rgb[..., ::-1])):
            raise OSError(f"{path}: PNG not written")


def montage(tiles: list[np.ndarray], cols: int = 4) -> np.ndarray:
    rows = [tiles[i:i + cols] for i in range(0, len(tiles), cols)]
    canvas = np.zeros((TILE * len(rows), TILE * min(cols, len(tiles)), 3), np.uint8)
    for r, row in enumerate(rows):
        for c, t in enumerate(row):
            canvas[r * TILE:r * TILE + t.shape[0], c * TILE:c * TILE + t.shape[1]] = t
    return canvas


def case_overlay(image: np.ndarray, seg: np.ndarray, boxes: np.ndarray, is_3d: bool, path: Path,
                 max_tiles: int = 8) -> None:
    if not is_3d:
        canvas = montage([draw(image, seg, boxes)])
    else:
        mids = sorted({middle_slice(int(b[2]), int(b[5])) for b in boxes}) or [image.shape[0] // 2]
        pick = [mids[int(i)] for i in np.linspace(0, len(mids) - 1, min(max_tiles, len(mids)))]
        tiles = []
        for z in dict.fromkeys(pick):
            on = box_xy(boxes[(boxes[:, 2] <= z) & (boxes[:, 5] >= z)])
            tiles.append(draw(image[z], seg[z], on))
        canvas = montage(tiles)
    write_png(path, canvas)
