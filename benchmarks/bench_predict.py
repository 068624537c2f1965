"""``make bench-predict``: organiser-style timings of fresh ``predict.sh`` processes.

Every figure comes from a new process on a one-case inputs folder (as the
organisers run it): cold compile cache vs warm, int8 vs FP32, slices encoded,
peak RSS; large synthetic 2D cases for memory; and the OpenVINO tuning options
on one 3D case.  All measured in this one run, side by side.
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from qmedsam.cases import is_3d_name

ROOT = Path(__file__).resolve().parents[1]


def run_case(case: Path, work: Path, *options: str, fresh_cache: bool = False) -> dict:
    """Run ``sh predict.sh`` on a folder holding only ``case``; outputs (and cache) persist in ``work``."""
    inputs, outputs = work / "inputs", work / "outputs"
    shutil.rmtree(inputs, ignore_errors=True)
    inputs.mkdir(parents=True)
    shutil.copy(case, inputs / case.name)
    if fresh_cache:
        shutil.rmtree(outputs / ".qmedsam-cache", ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    t = time.perf_counter()
    proc = subprocess.run(["sh", str(ROOT / "predict.sh"), "-i", str(inputs), "-o", str(outputs), "-v", *options],
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{case.name}: predict.sh failed: {proc.stderr.strip()[-400:]}")
    with open(outputs / "efficiency.csv") as f:
        row = list(csv.DictReader(f))[-1]
    first = re.search(r"first encoder output ([\d.]+) s", proc.stderr)
    return {"wall": wall, "slices": int(row["slices_encoded"]), "rss": float(row["peak_rss_mb"]),
            "first": float(first.group(1)) if first else float("nan"), "boxes": int(row["boxes"])}


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


def compare_3d_modes(samples: Path) -> None:
    """Dice against the ground truth of both 3D modes on the labelled sample volumes."""
    from qmedsam_eval.metrics import label_dice
    from qmedsam.cases import load_case
    from qmedsam.engine import Engine
    from qmedsam.segment import Options, segment_case

    gts = samples.parent / "gts"
    engine = Engine(ROOT / "models")
    print("\n3D modes vs ground truth (int8; mean Dice over the case's labels, slices encoded, seconds):")
    means = {"fixed": [], "propagate": []}
    for path in sorted(samples.glob("3D*.npz")):
        if not (gts / path.name).exists():
            continue
        case = load_case(path)
        gt = np.load(gts / path.name)["gts"]
        row = []
        for mode in means:
            t = time.perf_counter()
            seg, stats = segment_case(case, engine, Options(mode_3d=mode))
            secs = time.perf_counter() - t
            per_label = label_dice(seg, gt)
            score = float(np.mean([per_label.get(k, 0.0) for k in range(1, int(gt.max()) + 1)]))
            means[mode].append(score)
            row.append(f"{mode} {score:.4f} ({stats.slices_encoded} slices, {secs:.1f} s)")
        print(f"  {path.name:28s} " + "  ".join(row))
    print("  mean: " + "  ".join(f"{m} {np.mean(v):.4f}" for m, v in means.items() if v))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=Path, default=ROOT / "samples" / "inputs")
    ap.add_argument("--skip-large", action="store_true")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="qmedsam-bench-"))
    try:
        print("\nper sample case, fresh process each (wall s = whole `sh predict.sh` run):")
        print(f"{'case':28s} {'boxes':>5s} {'slices':>6s} {'int8 cold':>9s} {'int8 warm':>9s} "
              f"{'fp32 cold':>9s} {'fp32 warm':>9s} {'fp32/int8':>9s} {'1st emb s':>9s} {'RSS MB':>7s}")
        ratios_3d = []
        for case in sorted(args.samples.glob("*.npz")):
            r = {}
            for prec in ("int8", "fp32"):
                work = tmp / prec
                r[prec, "cold"] = run_case(case, work, "--precision", prec, fresh_cache=True)
                r[prec, "warm"] = run_case(case, work, "--precision", prec)
            ratio = r["fp32", "warm"]["wall"] / r["int8", "warm"]["wall"]
            if is_3d_name(case.name):
                ratios_3d.append(ratio)
            w = r["int8", "warm"]
            print(f"{case.name:28s} {w['boxes']:5d} {w['slices']:6d} {r['int8', 'cold']['wall']:9.2f} "
                  f"{w['wall']:9.2f} {r['fp32', 'cold']['wall']:9.2f} {r['fp32', 'warm']['wall']:9.2f} "
                  f"{ratio:9.2f} {w['first']:9.2f} {w['rss']:7.0f}")
        if ratios_3d:
            print(f"int8 end-to-end speed-up on 3D cases (warm): {np.mean(ratios_3d):.2f}x (target >= 1.4x)")

        case3d = args.samples / "3DBox_CT_0001.npz"
        if case3d.exists():
            print(f"\nOpenVINO options on {case3d.name} (int8, warm cache, wall s):")
            variants = [("default (LATENCY, all threads, overlap, auto float ops)", []),
                        ("no encode/decode overlap", ["--no-overlap"]),
                        ("1 thread", ["--threads", "1"]),
                        ("THROUGHPUT hint", ["--hint", "THROUGHPUT"]),
                        ("float ops forced to f32", ["--float-ops", "f32"]),
                        ("propagate mode", ["--mode-3d", "propagate"])]
            for label, opts in variants:
                work = tmp / ("opt" + re.sub(r"\W", "", label))
                run_case(case3d, work, *opts)               # warm the cache for this configuration
                res = run_case(case3d, work, *opts)
                print(f"  {label:48s} {res['wall']:7.2f}")

        compare_3d_modes(args.samples)

        if not args.skip_large:
            print("\nlarge 2D cases (int8, warm cache, --max-boxes auto):")
            for h, w, n in ((1920, 2560, 241), (3024, 4032, 255)):
                path = large_case(tmp, h, w, n, seed=h)
                run_case(path, tmp / "large")
                res = run_case(path, tmp / "large")
                print(f"  {h}x{w}, {n} boxes: wall {res['wall']:.2f} s, peak RSS {res['rss']:.0f} MB "
                      f"(target < 2048 MB)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
