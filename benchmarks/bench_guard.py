"""``make bench-guard``: what the int8 guard's probes say against what int8 does to a whole case.

For every 3D case (the labelled public volumes and their reslices, and MR volumes from nibabel's
test files with Otsu-component boxes), in each CPU setting: the int8 encoder's segmentation and
the float fallback's (the same engine, ``qmedsam.precision.guard``), their per-label agreement, their
DSC against the ground truth where there is one, and the probe statistics of a few probe choices
(lowest and pixel-weighted box Dice).  The guard's threshold is chosen from this table.  The
float fallback is the int8 folder's own float encoder (f16-stored weights, f32 arithmetic);
``make bench-int8`` compares with ``--precision fp32``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.cpu import describe, run_setting, settings
from qmedsam.cases.read import Case
from qmedsam.image.predictor import ImagePredictor
from qmedsam.image.preprocess import Geometry, image_to_tensor
from qmedsam.model.model import Model, ModelSettings
from qmedsam.model.spec import ENCODER_FLOAT
from qmedsam.precision.guard import (MIN_DICE, PROBE_SLICES, SURE_DICE, keeps_int8, pixel_dice, probe_prompts,
                                     probe_slices, settled)
from qmedsam.precision.policy import Plan
from qmedsam.precision.setting import float_ops_for
from qmedsam.segment.case_run import segment_case
from qmedsam_eval.metrics import case_scores

ROOT = Path(__file__).resolve().parents[1]
PROBES = {"ends of smallest, 3": 3, "ends of smallest, 1": 1, "ends of smallest, 2": 2, "ends of smallest, 6": 6}


def mr_volumes():
    """MR volumes of nibabel's test files, boxes around the 3D components of an Otsu mask."""
    import cv2
    from scipy import ndimage

    from qmedsam_eval.label_boxes import boxes_from_labels, relabel_consecutive
    from tools.modalities import CALIBRATION, load

    for src in CALIBRATION:
        if src.modality != "MR" or not src.file.endswith((".nii", ".nii.gz")):
            continue
        vol = np.stack([img for _, img in load(src)])
        level, _ = cv2.threshold(vol.reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        comps, n = ndimage.label(vol > level)
        sizes = ndimage.sum_labels(np.ones_like(comps), comps, range(1, n + 1))
        keep = [i + 1 for i in np.argsort(sizes)[::-1][:8] if sizes[i] >= 200]
        labels = relabel_consecutive(np.where(np.isin(comps, keep), comps, 0))
        yield Case(f"3DBox_MR_{src.file.split('.')[0]}.npz", vol, boxes_from_labels(labels))


def label_agreement(a: np.ndarray, b: np.ndarray, n: int) -> float:
    """Mean Dice over labels 1..n of two label maps (both empty: 1)."""
    out = []
    for lab in range(1, n + 1):
        x, y = a == lab, b == lab
        s = int(x.sum()) + int(y.sum())
        out.append(1.0 if s == 0 else 2.0 * int(np.logical_and(x, y).sum()) / s)
    return float(np.mean(out))


def probe_stats(model: Model, int8: str, case: Case, counts) -> dict:
    """For each probe count ``n`` of ``counts``: the lowest and the pixel-weighted (the guard's
    statistic) int8-vs-float Dice of the boxes on the first ``n`` probe slices (each slice encoded
    once, by both encoders)."""
    zs = probe_slices(case.boxes, max(counts))
    geo = Geometry(*case.image.shape[1:])
    prompts = probe_prompts(case.boxes, geo, zs)
    predictor = ImagePredictor(model, 8)
    masks = {}                          # slice -> (int8 masks, float masks)
    for z in zs:
        tensor, _ = image_to_tensor(case.image[z])
        masks[z] = [[m > 0 for m in predictor.set_embedding(model.encode(tensor, name)[0], geo).logits(prompts[z])]
                    for name in (int8, ENCODER_FLOAT.name)]
    out = {}
    for n in counts:
        pairs = [pair for z in zs[:n] for pair in zip(*masks[z])]
        # a few pixels' difference would decide smaller masks
        dice = [2.0 * int(np.logical_and(a, b).sum()) / (int(a.sum()) + int(b.sum()))
                for a, b in pairs if max(int(a.sum()), int(b.sum())) >= 8]
        out[n] = {"lowest": min(dice) if dice else None, "weighted": pixel_dice(pairs)}
    return out


def measure(models: Path, samples: Path) -> dict:
    from benchmarks.bench_prompting import cases

    from benchmarks.bench_int8_accuracy import auto_int8_encoder

    int8 = auto_int8_encoder(models)
    model = Model(models, ModelSettings(float_ops=float_ops_for("auto"), encoder=int8, also=ENCODER_FLOAT.name))
    labelled = [(c, gt, sp) for c, gt, sp in cases(samples) if c.is_3d]
    rows = {}
    for case, gt, spacing in [*labelled, *((c, None, None) for c in mr_volumes())]:
        row = {"boxes": len(case.boxes), "slices": int(case.image.shape[0])}
        segs = {}
        for name in (int8, ENCODER_FLOAT.name):
            segs[name] = segment_case(case, model, Plan(name, False, ""))[0]
        row["encoder"] = int8
        row["agreement"] = label_agreement(segs[int8], segs[ENCODER_FLOAT.name], len(case.boxes))
        if gt is not None:
            row["dsc"] = {"int8": case_scores(gt, segs[int8], spacing)[0],
                          "float": case_scores(gt, segs[ENCODER_FLOAT.name], spacing)[0]}
        stats = probe_stats(model, int8, case, sorted(set(PROBES.values())))
        row["probes"] = {k: stats[n] for k, n in PROBES.items()}
        rows[case.name] = row
        print(f"  {case.name}: {json.dumps(row)}", file=sys.stderr, flush=True)
    return rows


def _f(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def sequential(probes: dict) -> tuple[bool, int]:
    """What the shipped guard decides from a case's probe statistics (``row["probes"]``): probe
    slices one at a time, stopping once the pooled Dice reaches SURE_DICE, else judged on all
    PROBE_SLICES at MIN_DICE.  Returns (stays int8, probe slices taken)."""
    for n in range(1, PROBE_SLICES):
        if settled(probes[f"ends of smallest, {n}"]["weighted"]):
            return True, n
    return keeps_int8(probes[f"ends of smallest, {PROBE_SLICES}"]["weighted"]), PROBE_SLICES


def report(results: dict) -> None:
    for setting, rows in results.items():
        print(f"\n### {setting} (int8 encoder: {next(iter(rows.values()))['encoder']})\n")
        print("| case | boxes | slices | int8 vs float (case) | DSC int8 / float (points) | "
              + " | ".join(f"{k}: lowest / weighted" for k in PROBES) + " | guard (probe slices taken) |")
        print("|---|---:|---:|---:|---|" + "---|" * len(PROBES) + "---|")
        lost, kept = [], 0
        for case, r in rows.items():
            d = r.get("dsc")
            dsc = f"{d['int8']:.4f} / {d['float']:.4f} ({100 * (d['int8'] - d['float']):+.2f})" if d else "-"
            probes = " | ".join(f"{_f(r['probes'][k]['lowest'])} / {_f(r['probes'][k]['weighted'])}" for k in PROBES)
            int8, taken = sequential(r["probes"])
            kept += int8
            if d:
                lost.append(100 * (d["int8"] - d["float"]) if int8 else 0.0)
            print(f"| {case} | {r['boxes']} | {r['slices']} | {r['agreement']:.4f} | {dsc} | {probes} | "
                  f"{'int8' if int8 else 'float'} ({taken}) |")
        print(f"\nguard (probes one slice at a time up to {PROBE_SLICES}, stopping at a pixel Dice of {SURE_DICE}, "
              f"else int8 at {MIN_DICE} or more): {kept} of {len(rows)} cases int8; labelled cases "
              f"guarded vs float: mean {np.mean(lost):+.2f} DSC points, worst {min(lost):+.2f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--samples", type=Path, default=ROOT / "samples" / "inputs")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.models, args.samples)))
        return
    print(f"CPU: {describe()}")
    results = {}
    for setting in settings():
        print(f"measuring: {setting}", file=sys.stderr, flush=True)
        results[setting] = run_setting("benchmarks.bench_guard", setting,
                                       ["--models", str(args.models), "--samples", str(args.samples)], progress=True)
    report(results)


if __name__ == "__main__":
    main()
