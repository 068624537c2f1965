"""``make bench-int8-signals``: can the int8 pass alone tell where int8 departs from float?

The guard finds out by encoding probe slices with both encoders (a float pass each).  A cheaper
guard would read a signal off the int8 pass alone.  For every held-out public image (CT, MR,
ultrasound, photographs, microscopy: :func:`tools.modalities.held_out_sets`) and every slice of
the case mix's short 3D cases (:mod:`tools.case_mix`), both encoders' masks of its boxes are
compared (pixel Dice of all boxes together, the guard's statistic), beside three int8-only
signals of the same image: the masks' stability when the threshold moves by T logits (pixel Dice
of ``logits > T`` and ``logits > -T``), the share of mask pixels within T of the threshold, and the
decoder's lowest predicted IoU.  Printed per setting: each signal's rank correlation with the
agreement, and how many images a threshold on it would let skip the float pass while still
catching every image whose agreement is below the guard's ``MIN_DICE``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.cpu import describe, run_setting, settings

ROOT = Path(__file__).resolve().parents[1]
T = 1.0                     # logits: sigmoid(1) = 0.73, sigmoid(-1) = 0.27


def images() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(tag, 2D image, (K, 4) boxes) of the held-out sets and of each slice of the mix's short 3D cases."""
    from qmedsam.segment.plan3d import box_xy
    from tools.case_mix import write_mix
    from tools.modalities import held_out_sets

    out = [(f"{m}-{i}", img, boxes) for m, pairs in held_out_sets().items() for i, (img, boxes) in enumerate(pairs)]
    mix = ROOT / "out" / "case-mix"
    if not (mix / "inputs").is_dir():
        write_mix(mix)
    for path in sorted((mix / "inputs").glob("3DBox_*short*.npz")):
        with np.load(path) as d:
            vol, boxes = d["imgs"], d["boxes"]
        for z in range(int(boxes[:, 2].min()), int(boxes[:, 5].max()) + 1):
            on = boxes[(boxes[:, 2] <= z) & (boxes[:, 5] >= z)]
            out.append((f"{path.stem}-z{z}", vol[z], box_xy(on)))
    return out


def _pooled(pairs) -> float | None:
    both = sum(int(np.logical_and(a, b).sum()) for a, b in pairs)
    total = sum(int(a.sum()) + int(b.sum()) for a, b in pairs)
    return 2.0 * both / total if total else None


def measure(models: Path) -> list[dict]:
    from qmedsam.image.predictor import ImagePredictor
    from qmedsam.image.preprocess import boxes_to_model, image_to_tensor
    from qmedsam.model.model import Model, ModelSettings
    from qmedsam.model.spec import ENCODER_FLOAT, ENCODER_W7
    from qmedsam.precision.setting import float_ops_for

    model = Model(models, ModelSettings(float_ops=float_ops_for("auto"), encoder=ENCODER_W7.name,
                                        also=ENCODER_FLOAT.name))
    rows = []
    for tag, img, boxes in images():
        tensor, geo = image_to_tensor(img)
        prompts = boxes_to_model(boxes, geo)
        h, w = geo.resized
        got = {}
        for name in (ENCODER_W7.name, ENCODER_FLOAT.name):
            predictor = ImagePredictor(model, 16).set_embedding(model.encode(tensor, name)[0], geo)
            logits, iou = [], []
            for s in range(0, len(prompts), 16):
                block, block_iou = predictor.decode(prompts[s:s + 16])
                logits.extend(block[:, 0, :h, :w])
                iou.extend(block_iou.tolist())
            got[name] = (logits, iou)
        q, f = got[ENCODER_W7.name][0], got[ENCODER_FLOAT.name][0]
        mask_px = sum(int((a > 0).sum()) for a in q)
        rows.append({"image": tag, "boxes": len(boxes),
                     "agreement": _pooled([(a > 0, b > 0) for a, b in zip(q, f)]),
                     "stability": _pooled([(a > T, a > -T) for a in q]),
                     "near": sum(int((np.abs(a) < T).sum()) for a in q) / max(mask_px, 1),
                     "iou": float(min(got[ENCODER_W7.name][1]))})
        print(f"  {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    return rows


def _rank(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x)).astype(float)


def analyse(rows: list[dict], min_dice: float) -> list[str]:
    rows = [r for r in rows if r["agreement"] is not None and r["stability"] is not None]
    agree = np.array([r["agreement"] for r in rows])
    departs = agree < min_dice
    lines = [f"  {len(rows)} images, {int(departs.sum())} with int8-vs-float agreement under {min_dice}: "
             + ", ".join(f"{r['image']} {r['agreement']:.3f}" for r, d in zip(rows, departs) if d)]
    for key, higher_is_safe in (("stability", True), ("near", False), ("iou", True)):
        s = np.array([r[key] for r in rows]) * (1 if higher_is_safe else -1)
        rho = float(np.corrcoef(_rank(s), _rank(agree))[0, 1])
        if departs.any():
            bar = s[departs].max()             # every departing image must fall at or under it
            skip = int((s[~departs] > bar).sum())
            verdict = f"a threshold catching every departure lets {skip} of {int((~departs).sum())} images skip the float pass"
        else:
            verdict = "no departure to catch here"
        lines.append(f"  {key:10s} rank correlation with agreement {rho:+.2f}; {verdict}")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.models)))
        return 0
    from qmedsam.precision.guard import MIN_DICE

    print(f"CPU: {describe()}")
    results = {}
    for setting in settings():
        print(f"measuring: {setting}", file=sys.stderr, flush=True)
        results[setting] = run_setting("benchmarks.bench_int8_signals", setting, ["--models", str(args.models)])
        print(f"{setting}:")
        for line in analyse(results[setting], MIN_DICE):
            print(line)
    out = ROOT / "out" / "bench-int8-signals.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"cpu": describe(), "results": results}, indent=1))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
