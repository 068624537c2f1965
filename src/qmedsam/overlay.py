"""PNG montages of image, boxes and masks for a quick look (one per case)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from qmedsam.preprocess import to_rgb

TILE = 384


def _palette(n: int) -> np.ndarray:
    hues = (np.arange(max(n, 1)) * 0.61803398875 % 1.0 * 180).astype(np.uint8)
    hsv = np.stack([hues, np.full_like(hues, 220), np.full_like(hues, 255)], axis=1)[None]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0]


def draw(image: np.ndarray, seg: np.ndarray, boxes: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """BGR tile: image, label colours blended in, box outlines."""
    rgb = to_rgb(image)
    colours = _palette(int(max(seg.max(), len(boxes))) + 1)
    out = rgb[:, :, ::-1].astype(np.float32)
    mask = seg > 0
    out[mask] = (1 - alpha) * out[mask] + alpha * colours[seg[mask].astype(np.int64) - 1]
    out = out.astype(np.uint8)
    s = TILE / max(out.shape[:2])
    out = cv2.resize(out, (max(1, round(out.shape[1] * s)), max(1, round(out.shape[0] * s))),
                     interpolation=cv2.INTER_NEAREST)
    for i, b in enumerate(boxes):
        p0 = (int(b[0] * s), int(b[1] * s))
        p1 = (int((b[2] + 1) * s), int((b[3] + 1) * s))
        cv2.rectangle(out, p0, p1, tuple(int(c) for c in colours[i]), 1)
    return out


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
        mids = sorted({int((b[2] + b[5]) // 2) for b in boxes}) or [image.shape[0] // 2]
        pick = [mids[int(i)] for i in np.linspace(0, len(mids) - 1, min(max_tiles, len(mids)))]
        tiles = []
        for z in dict.fromkeys(pick):
            on = boxes[(boxes[:, 2] <= z) & (boxes[:, 5] >= z)][:, [0, 1, 3, 4]]
            tiles.append(draw(image[z], seg[z], on))
        canvas = montage(tiles)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), canvas)
