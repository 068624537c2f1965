"""Score a folder of predictions against a folder of ground truths, case by case.

Ground truth: ``<case>.npz`` with ``gts`` (and ``spacing`` for 3D); the
challenge's inputs with ``gts`` added, or what ``qmedsam-convert`` writes, also
work.  Prediction: ``<case>.npz`` with ``segs``.  A missing, unreadable or
mis-shaped prediction scores 0 and its problem is kept with the row.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qmedsam.cases.read import modality_of
from qmedsam_eval.metrics import LabelScore, label_scores


@dataclass
class CaseScore:
    case: str
    modality: str
    dsc: float
    nsd: float
    labels: list[LabelScore] = field(default_factory=list)
    problem: str = ""


def _spacing(gt_file, ndim: int) -> tuple[tuple[float, ...] | None, str]:
    if ndim == 2:
        return None, ""          # a 2D case is scored as a one-slice volume with spacing (1, 1, 1)
    if "spacing" in gt_file.files:
        sp = tuple(float(s) for s in np.asarray(gt_file["spacing"]).ravel())
        if len(sp) == 3 and all(s > 0 for s in sp):
            return sp, ""
    return (1.0, 1.0, 1.0), "no valid spacing in ground truth; NSD in voxels"


def score_case(gt_path: Path, pred_path: Path) -> CaseScore:
    name, modality = gt_path.name, modality_of(gt_path.name)
    with np.load(gt_path) as g:
        if "gts" not in g.files:
            raise ValueError(f"{gt_path}: no 'gts' key in ground truth")
        gt = g["gts"]
        spacing, note = _spacing(g, gt.ndim)
    zero = [LabelScore(int(lab), 0.0, 0.0) for lab in np.unique(gt) if lab != 0]
    if not pred_path.is_file():
        return CaseScore(name, modality, 0.0, 0.0, zero, "missing prediction")
    try:
        with np.load(pred_path) as p:
            pred = p["segs"]
    except Exception as e:  # a broken prediction is a zero, not a crash
        return CaseScore(name, modality, 0.0, 0.0, zero, f"unreadable prediction ({type(e).__name__}: {e})")
    if pred.shape != gt.shape:
        return CaseScore(name, modality, 0.0, 0.0, zero,
                         f"prediction shape {pred.shape} != ground truth {gt.shape}")
    labels = label_scores(gt, pred, spacing)
    if not labels:
        return CaseScore(name, modality, float("nan"), float("nan"), [], "no labels in ground truth")
    return CaseScore(name, modality, float(np.mean([s.dsc for s in labels])),
                     float(np.mean([s.nsd for s in labels])), labels, note)


def score_folder(gt_dir: Path, pred_dir: Path, progress=None) -> list[CaseScore]:
    gts = sorted(gt_dir.glob("*.npz"))
    if not gts:
        raise FileNotFoundError(f"no *.npz ground truths in {gt_dir}")
    return [score_case(g, pred_dir / g.name) for g in (progress(gts) if progress else gts)]


def write_metrics_csv(scores: list[CaseScore], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    cases, labels = out_dir / "metrics.csv", out_dir / "labels.csv"
    with open(cases, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case", "modality", "dsc", "nsd"])
        for s in scores:
            w.writerow([s.case, s.modality, f"{s.dsc:.6f}", f"{s.nsd:.6f}"])
    with open(labels, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case", "modality", "label", "dsc", "nsd", "problem"])
        for s in scores:
            for lab in s.labels:
                w.writerow([s.case, s.modality, lab.label, f"{lab.dsc:.6f}", f"{lab.nsd:.6f}", s.problem])
    return cases, labels
