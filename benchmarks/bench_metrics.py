"""``make bench-metrics``: scoring time, ours vs the organisers' reference package, side by side.

Two cases scored by the organisers' rules (case DSC; NSD only when it is > 0.2; a 2D case as an
(H, W, 1) volume with spacing 1):
* 3D: a 300x512x512 label map with ten organ-sized labels (anisotropic spacing), the prediction
  shifted by three voxels (2.4 mm);
* 2D: a 1920x2560 label map with 241 nucleus-sized regions, the prediction shifted by 2 px and
  one region in ten missed.
Each is timed with our metrics and with DeepMind's ``surface-distance`` (the organisers'
implementation, which works on each whole label mask) when it is installed; prints seconds, the
ratio and the largest difference of the case scores.
"""
from __future__ import annotations

import time

import numpy as np

from qmedsam_eval.metrics import NSD_DSC_GATE, TOLERANCE, as_scored_volume, case_scores

SPACING = (2.5, 0.8, 0.8)


def make_3d_case(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gt = np.zeros((300, 512, 512), np.uint8)
    z, y, x = np.ogrid[:300, :512, :512]
    for lab in range(1, 11):
        cz, cy, cx = rng.integers(40, 260), rng.integers(80, 430), rng.integers(80, 430)
        rz, ry, rx = rng.integers(8, 30), rng.integers(15, 60), rng.integers(15, 60)
        zs, ys, xs = slice(cz - rz, cz + rz + 1), slice(cy - ry, cy + ry + 1), slice(cx - rx, cx + rx + 1)
        ball = (((z[zs] - cz) / rz) ** 2 + ((y[:, ys] - cy) / ry) ** 2 + ((x[:, :, xs] - cx) / rx) ** 2) <= 1
        gt[zs, ys, xs][ball] = lab
    return gt, np.roll(gt, 3, axis=1)          # 2.4 mm: beyond the 2 mm tolerance


def make_2d_case(seed: int = 0, n: int = 241) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gt = np.zeros((1920, 2560), np.uint16)
    for lab in range(1, n + 1):
        cy, cx, r = rng.integers(20, 1900), rng.integers(20, 2540), rng.integers(4, 14)
        y, x = np.ogrid[cy - r:cy + r + 1, cx - r:cx + r + 1]
        gt[cy - r:cy + r + 1, cx - r:cx + r + 1][(y - cy) ** 2 + (x - cx) ** 2 <= r * r] = lab
    pred = np.roll(gt, 2, axis=1)
    pred[np.isin(pred, np.arange(1, n + 1, 10))] = 0
    return gt, pred


def reference_case(gt: np.ndarray, pred: np.ndarray, spacing) -> tuple[float, float]:
    """The organisers' per-case computation with the reference package."""
    np.Inf, np.NaN = np.inf, np.nan  # noqa: NPY001  (the package predates NumPy 2)
    import surface_distance as sd

    gt, pred, spacing = as_scored_volume(gt, pred, spacing)
    labels = np.unique(gt)[1:]
    dsc = float(np.mean([sd.compute_dice_coefficient(gt == lab, pred == lab) for lab in labels]))
    if dsc <= NSD_DSC_GATE:
        return dsc, 0.0
    return dsc, float(np.mean([sd.compute_surface_dice_at_tolerance(
        sd.compute_surface_distances(gt == lab, pred == lab, spacing), TOLERANCE) for lab in labels]))


def bench(name: str, gt: np.ndarray, pred: np.ndarray, spacing) -> None:
    t = time.perf_counter()
    ours = case_scores(gt, pred, spacing)
    t_ours = time.perf_counter() - t
    print(f"{name}: {gt.shape}, {len(np.unique(gt)) - 1} labels, spacing {spacing or '(1, 1, 1) as a one-slice volume'}")
    print(f"  qmedsam_eval.metrics: {t_ours:7.2f} s  (DSC {ours[0]:.4f}, NSD {ours[1]:.4f})")
    try:
        t = time.perf_counter()
        ref = reference_case(gt, pred, spacing)
        t_ref = time.perf_counter() - t
    except ImportError:
        print("  surface-distance not installed: no side-by-side figure")
        return
    diff = max(abs(a - b) for a, b in zip(ours, ref))
    print(f"  surface-distance:     {t_ref:7.2f} s  ({t_ref / t_ours:.1f}x ours); largest case-score difference "
          f"{diff:.2e}")


def main() -> int:
    bench("3D case", *make_3d_case(), SPACING)
    bench("2D case", *make_2d_case(), None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
