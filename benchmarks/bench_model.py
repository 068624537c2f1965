"""``make bench-model``: int8 vs FP32 model latency and mask agreement, measured side by side.

Prints encoder latency per slice (median of repeated runs, interleaved so both
models see the same machine state), decoder latency for 1 and 64 boxes, and the
Dice agreement between int8 and FP32 label maps on the bundled sample cases.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from qmedsam_eval.metrics import label_dice
from qmedsam.cases import load_case
from qmedsam.engine import Engine
from qmedsam.segment import Options, segment_case

ROOT = Path(__file__).resolve().parents[1]


def _median_ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--samples", type=Path, default=ROOT / "samples" / "inputs")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)

    engines = {
        "fp32": Engine(args.models / "fp32", threads=args.threads, float_precision="f32"),
        "fp32-bf16": Engine(args.models / "fp32", threads=args.threads, float_precision="bf16"),
        "int8-f32": Engine(args.models, threads=args.threads, float_precision="f32"),
        "int8": Engine(args.models, threads=args.threads),
    }
    rng = np.random.default_rng(0)
    image = rng.random((1, 3, 256, 256), dtype=np.float32)
    emb = rng.normal(size=(1, 256, 64, 64)).astype(np.float32)
    boxes = {n: np.tile(np.array([[[30, 40, 160, 200]]], np.float32), (n, 1, 1)) for n in (1, 64)}
    for e in engines.values():                     # warm-up
        for _ in range(3):
            e.encode(image)
        e.decode(emb, boxes[1])
        e.decode(emb, boxes[64])
    enc = {k: [] for k in engines}
    for _ in range(args.runs):                     # interleaved
        for k, e in engines.items():
            enc[k].append(_median_ms(lambda: e.encode(image), 1))
    print(f"\nencoder latency per slice, median of {args.runs} interleaved runs "
          f"(threads={args.threads or 'all'}):")
    for k in engines:
        print(f"  {k:10s} {np.median(enc[k]):8.1f} ms")
    for k in ("int8", "int8-f32", "fp32-bf16"):
        print(f"  speed-up of {k} over fp32: {np.median(enc['fp32']) / np.median(enc[k]):.2f}x")
    print("  (int8 = the runtime default: float leftovers in OpenVINO's native precision, bf16 here)")
    print("\ndecoder latency (median):")
    for n, b in boxes.items():
        row = "  ".join(f"{k} {_median_ms(lambda: e.decode(emb, b), max(3, args.runs // (4 if n > 1 else 1))):8.1f} ms"
                        for k, e in engines.items())
        print(f"  {n:3d} boxes: {row}")
    agreement_table(args.samples, engines)


def agreement_table(samples: Path, engines: dict) -> None:
    """Mask agreement with fp32 (overall, and on labels fp32 segments reliably) and Dice vs truth."""
    gts = samples.parent / "gts"
    others = [k for k in engines if k != "fp32"]
    print("\nmask agreement with fp32 (mean Dice over labels; 'reliable' = labels where fp32 reaches "
          "Dice >= 0.8 against the ground truth; fp32-bf16 = the float model's own arithmetic noise floor):")
    print(f"  {'case':28s} {'boxes':>5s}  " + "  ".join(f"{k + ' all':>13s} {k + ' reliable':>18s}" for k in others)
          + "   Dice vs truth: " + " ".join(f"{k:>9s}" for k in engines))
    totals = {k: ([], []) for k in others}
    truth = {k: [] for k in engines}
    for path in sorted(samples.glob("*.npz")):
        case = load_case(path)
        gt = np.load(gts / path.name)["gts"] if (gts / path.name).exists() else None
        segs = {k: segment_case(case, e, Options())[0] for k, e in engines.items()}
        labels = range(1, len(case.boxes) + 1)
        vs_gt = {k: label_dice(s, gt) if gt is not None else {} for k, s in segs.items()}
        reliable = [l for l in labels if vs_gt["fp32"].get(l, 0.0) >= 0.8] if gt is not None else list(labels)
        cells = []
        for k in others:
            per = label_dice(segs[k], segs["fp32"])
            all_mean = float(np.mean([per.get(l, 1.0 if not (segs[k] == l).any() and not (segs["fp32"] == l).any() else 0.0)
                                      for l in labels]))
            rel = float(np.mean([per.get(l, 0.0) for l in reliable])) if reliable else float("nan")
            totals[k][0].append(all_mean)
            totals[k][1].append(rel)
            cells.append(f"{all_mean:13.4f} {rel:13.4f} ({len(reliable):3d})")
        gt_cells = []
        for k in engines:
            score = float(np.mean([vs_gt[k].get(l, 0.0) for l in labels])) if gt is not None else float("nan")
            truth[k].append(score)
            gt_cells.append(f"{score:9.4f}")
        print(f"  {path.name:28s} {len(case.boxes):5d}  " + "  ".join(cells) + "                  " + " ".join(gt_cells))
    print("  mean" + " " * 31 + "  ".join(f"{np.mean(a):13.4f} {np.nanmean(r):13.4f}      " for a, r in totals.values())
          + "                  " + " ".join(f"{np.mean(v):9.4f}" for v in truth.values()))


if __name__ == "__main__":
    main()
