"""Side-by-side PNGs: image | ground truth | prediction (3D: the middle slice of each label)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from qmedsam.cases.overlay import draw, montage, write_png
from qmedsam.segment.plan3d import middle_slice

NO_BOXES = np.zeros((0, 4), np.int64)


def _label_slices(gt: np.ndarray) -> list[int]:
    """Middle slice (of its z extent) of each ground-truth label, in label order, no repeats."""
    zs = []
    for lab in np.unique(gt):
        if lab == 0:
            continue
        hits = np.flatnonzero((gt == lab).any(axis=(1, 2)))
        zs.append(middle_slice(int(hits[0]), int(hits[-1])))
    return list(dict.fromkeys(zs)) or [gt.shape[0] // 2]


def side_by_side(image: np.ndarray, gt: np.ndarray, pred: np.ndarray | None, max_rows: int = 8) -> np.ndarray:
    if pred is None or pred.shape != gt.shape:
        pred = np.zeros_like(gt)
    rows = []
    if gt.ndim == 2:
        rows.append([draw(image, np.zeros_like(gt), NO_BOXES), draw(image, gt, NO_BOXES),
                     draw(image, pred, NO_BOXES)])
    else:
        zs = _label_slices(gt)
        for z in [zs[int(i)] for i in np.linspace(0, len(zs) - 1, min(max_rows, len(zs)))]:
            rows.append([draw(image[z], np.zeros_like(gt[z]), NO_BOXES), draw(image[z], gt[z], NO_BOXES),
                         draw(image[z], pred[z], NO_BOXES)])
    return montage([tile for row in rows for tile in row], cols=3)


def overlay_folder(images: Path, gts: Path, preds: Path, out: Path, progress=None) -> list[Path]:
    """One PNG per ground-truth case; the image comes from ``images`` (inputs) or the ground truth."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    cases = sorted(gts.glob("*.npz"))
    for gt_path in progress(cases) if progress else cases:
        with np.load(gt_path) as g:
            gt = g["gts"]
            image = g["imgs"] if "imgs" in g.files else None
        if image is None:
            with np.load(images / gt_path.name) as src:
                image = src["imgs"]
        pred = None
        if (preds / gt_path.name).is_file():
            with np.load(preds / gt_path.name) as p:
                pred = p["segs"]
        path = out / f"{gt_path.stem}.png"
        write_png(path, side_by_side(image, gt, pred))
        written.append(path)
    return written
