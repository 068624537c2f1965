"""Index build time and peak memory on a synthetic training tree (``make bench-index``).

Writes N cases (80 % 2D 256x256x3, 20 % 3D 24x128x128 with labels on 8 slices; noise images,
so files are as large as real ones and reading them would show) over five
modalities, then builds the index in fresh processes: cold (reads every file's ``gts``), warm
(cache valid), and after touching 5 % of the files.  Prints seconds and peak RSS of each build.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

MODALITIES = ("CT", "MR", "US", "Endoscopy", "Microscopy")


def write_tree(root: Path, n: int, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    total = 0
    for i in tqdm(range(n), desc="writing synthetic tree", unit="file"):
        mod = MODALITIES[i % len(MODALITIES)]
        folder = root / mod
        folder.mkdir(parents=True, exist_ok=True)
        if i % 5 == 4:
            gts = np.zeros((24, 128, 128), np.uint8)
            for z in rng.choice(24, size=8, replace=False):
                y, x = rng.integers(0, 100, size=2)
                gts[z, y:y + 20, x:x + 20] = rng.integers(1, 5)
            imgs = rng.integers(0, 256, size=gts.shape, dtype=np.uint8)      # incompressible, like real scans
            np.savez_compressed(folder / f"3DBox_{mod}_{i:05d}.npz", imgs=imgs, gts=gts,
                                spacing=np.array([2.0, 1.0, 1.0]))
            total += 8
        else:
            gts = np.zeros((256, 256), np.uint8)
            y, x = rng.integers(0, 200, size=2)
            gts[y:y + 40, x:x + 40] = 1
            np.savez_compressed(folder / f"2DBox_{mod}_{i:05d}.npz",
                                imgs=rng.integers(0, 256, size=(256, 256, 3), dtype=np.uint8), gts=gts)
            total += 1
    return total


def _child(root: str) -> None:
    from training.data.index import build_index

    t = time.perf_counter()
    index = build_index(Path(root), progress=False)
    print(json.dumps({"seconds": time.perf_counter() - t, "samples": len(index), "files": len(index.entries),
                      "peak_rss_mb": max(resource.getrusage(who).ru_maxrss for who in
                                         (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024}))


def measure(root: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_index", "--child", str(root)],
                         capture_output=True, encoding="utf-8", errors="replace", check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])   # peak: the build process or any worker


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--dir", type=Path, default=Path("out/bench-index"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.child)
        return 0
    root = args.dir / f"tree-{args.files}"
    if not root.exists():
        expected = write_tree(root, args.files)
        print(f"{args.files} files, {expected} labelled slices in {root}")
    (root / ".qmedsam-index.json").unlink(missing_ok=True)
    size = sum(p.stat().st_size for p in root.rglob("*.npz")) / 2**20
    cold = measure(root)
    warm = measure(root)
    touched = sorted(root.rglob("*.npz"))[:: 20]
    for p in touched:
        os.utime(p)
    partial = measure(root)
    print(f"tree: {args.files} files, {size:.0f} MiB compressed, {cold['samples']} samples, "
          f"{os.cpu_count()} CPUs")
    print("| build | seconds | files/s | peak RSS (MiB) |\n|---|---:|---:|---:|")
    for name, r in (("cold (no cache)", cold), ("warm (cache valid)", warm),
                    (f"{len(touched)} files touched", partial)):
        print(f"| {name} | {r['seconds']:.2f} | {args.files / r['seconds']:.0f} | "
              f"{r['peak_rss_mb']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
