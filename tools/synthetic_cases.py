"""Synthetic cases made from the bundled samples, for timings and the image test: a large image
with many small boxes, a one-box image."""
from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def large_case(folder: Path, h: int, w: int, n: int, seed: int) -> Path:
    """A big RGB image tiled from the nuclei sample, with n boxes around real nuclei-sized blobs."""
    rng = np.random.default_rng(seed)
    base = np.load(ROOT / "samples" / "inputs" / "2DBox_Microscope_0003.npz")["imgs"]
    reps = (-(-h // base.shape[0]), -(-w // base.shape[1]), 1)
    img = np.tile(base, reps)[:h, :w]
    x0 = rng.integers(0, w - 200, n)
    y0 = rng.integers(0, h - 200, n)
    size = rng.integers(20, 200, (n, 2))
    boxes = np.stack([x0, y0, x0 + size[:, 0], y0 + size[:, 1]], axis=1)
    path = folder / f"2DBox_Large_{h}x{w}_{n}.npz"
    np.savez_compressed(path, imgs=img, boxes=boxes)
    return path


def one_box_case(folder: Path) -> Path:
    src = np.load(ROOT / "samples" / "inputs" / "2DBox_CT_0002.npz")
    path = folder / "2DBox_OneBox_0001.npz"
    np.savez_compressed(path, imgs=src["imgs"], boxes=src["boxes"][:1])
    return path
