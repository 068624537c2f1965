"""``make bench-predict``: organiser-style timings of fresh ``predict.sh`` processes, this runtime
against a baseline revision of it (and with `--zoom off`, its speed without the zoom's extra
encoder passes; with `--decoder-windows off`, without the decoder's per-box windows; and, on CPUs where ``--precision auto`` runs the float encoder, with the int8
one), side by side in one run.

Every figure comes from a new process on a one-case inputs folder with a warm compile cache (as
the organisers run it, after a first run that fills the cache): whole-run wall seconds, process
start -> first encoder output, peak RSS; the versions' runs are interleaved.  The baseline
(default: the runtime before the factored decoder, OpenCV and start-up work) runs from a
temporary git worktree of that revision with its own models.  Both run as this CPU runs them by default and as on the
organisers' kind of CPU (AVX-512 without VNNI, float leftovers in f32; :mod:`benchmarks.cpu`).
Also: preprocessing of a 3024x4032 photo, and the decoder's memory per box (which
``--max-boxes auto`` is derived from).
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.cpu import describe, settings, settings_note
from qmedsam.precision.setting import FLOAT_ENCODER, choose_encoder
from tools.synthetic_cases import large_case, one_box_case

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "f0108c7"       # the runtime before the factored decoder (the layout change kept it byte-equal)


def run_case(predict_sh: Path, case: Path, work: Path, env: dict, *options: str) -> dict:
    """Run ``sh predict.sh`` on a folder holding only ``case``; outputs (and cache) persist in ``work``."""
    inputs, outputs = work / "inputs", work / "outputs"
    shutil.rmtree(inputs, ignore_errors=True)
    inputs.mkdir(parents=True)
    shutil.copy(case, inputs / case.name)
    t = time.perf_counter()
    proc = subprocess.run(["sh", str(predict_sh), "-i", str(inputs), "-o", str(outputs), "-v", *options],
                          capture_output=True, encoding="utf-8", errors="replace", env=env)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{case.name}: {predict_sh} failed: {proc.stderr.strip()[-600:]}")
    with open(outputs / "efficiency.csv", newline="") as f:
        row = list(csv.DictReader(f))[-1]

    def column(name: str) -> float:        # the cost ledger's (a baseline revision may predate it)
        return float(row[name]) if row.get(name) else float("nan")

    return {"wall": wall, "rss": float(row["peak_rss_mb"]), "first": column("first_output_at_s"),
            "ready": column("ready_at_s")}


class Baseline:
    """A temporary git worktree of ``rev`` (its runtime and models)."""

    def __init__(self, rev: str, tmp: Path):
        self.path = tmp / f"baseline-{rev}"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(self.path), rev], check=True)

    def close(self):
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(self.path)], check=False)


def timed(versions: dict, case: Path, work: Path, env: dict, runs: int, *options: str) -> dict:
    """Median figures per version ({name: (predict.sh, options)}) on ``case``.  Runs are
    interleaved (one run of each version in turn, ``runs`` rounds) so that a slow spell of a shared
    machine does not land on one version; a first run of each fills its compile cache."""
    places = {v: work / f"v{i}" for i, v in enumerate(versions)}
    for v, (sh, extra) in versions.items():
        run_case(sh, case, places[v], env, *options, *extra)
    rs = {v: [] for v in versions}
    for _ in range(runs):
        for v, (sh, extra) in versions.items():
            rs[v].append(run_case(sh, case, places[v], env, *options, *extra))
    return {v: {k: statistics.median(r[k] for r in rs[v]) for k in rs[v][0]} for v in versions}


def cold(versions: dict, case: Path, work: Path, env: dict, runs: int) -> dict:
    """Median figures per version with a fresh outputs folder every run (no compile cache), interleaved."""
    rs = {v: [] for v in versions}
    for r in range(runs):
        for i, (v, (sh, extra)) in enumerate(versions.items()):
            place = work / f"cold-{i}-{r}"
            rs[v].append(run_case(sh, case, place, env, *extra))
            shutil.rmtree(place, ignore_errors=True)
    return {v: {k: statistics.median(x[k] for x in rs[v]) for k in rs[v][0]} for v in versions}


# What a fresh process costs before the predictor does anything of its own: the floor under start-up.
FLOOR = {"python -c pass": "pass", "+ import numpy": "import numpy", "+ cv2": "import numpy, cv2",
         "+ openvino": "import numpy, cv2, openvino"}


def import_floor(env: dict, runs: int) -> dict:
    """Median wall seconds of a fresh interpreter running each of :data:`FLOOR` (interleaved)."""
    rs = {k: [] for k in FLOOR}
    for _ in range(runs + 1):
        for k, code in FLOOR.items():
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, env=env)
            rs[k].append(time.perf_counter() - t)
    return {k: statistics.median(v[1:]) for k, v in rs.items()}       # the first round warms the disk cache


def startup(versions: dict, case: Path, tmp: Path, env: dict, runs: int) -> None:
    """The start-up floor and the 1-box case warm and cold, each version side by side."""
    for k, sec in import_floor(env, runs).items():
        print(f"  floor: {k:24s} {sec:6.3f} s")
    for label, res in (("warm cache", timed(versions, case, tmp / "warm", env, runs)),
                       ("fresh outputs folder (compiles)", cold(versions, case, tmp / "cold", env, runs))):
        print(f"  {case.name}, {label}:")
        for v, r in res.items():
            print(f"    {v:24s} {r['wall']:6.3f} s whole run; models ready {r['ready']:5.2f} s after the start-up "
                  f"checks; first encoder output {r['first']:5.2f} s after process start; peak RSS {r['rss']:.0f} MB")


def _versus(res: dict, work: Path, names: list, case: Path) -> str:
    """The default's ratio to --precision fp32, or (windows) to --decoder-windows off with the share
    of voxels their label maps give the same label."""
    if "this, --precision fp32" in res:
        fp32 = res['this, --precision fp32']['wall']
        out = f"  default vs --precision fp32: {fp32 / res['this (default)']['wall']:.2f}x"
        if "this, --precision int8" in res:
            out += f", int8 without the guard vs fp32: {fp32 / res['this, --precision int8']['wall']:.2f}x"
        if "this, no interpolation" in res:
            out += f", vs no interpolation: {res['this, no interpolation']['wall'] / res['this (default)']['wall']:.2f}x"
        return out
    if "this, no windows" not in res:
        return ""
    a, b = (np.load(work / f"v{names.index(v)}" / "outputs" / case.name)["segs"] for v in ("this (default)", "this, no windows"))
    return (f"  windows vs none: {res['this, no windows']['wall'] / res['this (default)']['wall']:.2f}x, "
            f"label maps equal on {100 * float(np.mean(a == b)):.4f} % of voxels")


def preprocessing_seconds() -> float:
    from qmedsam.image.preprocess import image_to_tensor

    photo = np.random.default_rng(0).integers(0, 256, (3024, 4032, 3), dtype=np.uint8)
    image_to_tensor(photo)
    return min(_seconds(lambda: image_to_tensor(photo)) for _ in range(5))


def _seconds(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def coronal_ct_case(folder: Path) -> Path:
    """The CT sample resliced coronally (128 slices, 7 boxes): a longer encoder-bound volume."""
    from benchmarks.bench_prompting import resliced

    case = next(c for c, _, _ in resliced(ROOT / "samples" / "inputs") if "CT" in c.name)
    path = folder / case.name
    np.savez_compressed(path, imgs=case.image, boxes=case.boxes)
    return path


def tiled_3d_case(folder: Path) -> Path:
    """The 3D nuclei tiled to 124 slices with 408 labels (:func:`benchmarks.bench_prompting.tiled_3d_case`)."""
    from benchmarks.bench_prompting import tiled_3d_case as tiled

    case, _, spacing = tiled()
    path = folder / case.name
    np.savez_compressed(path, imgs=case.image, boxes=case.boxes, spacing=np.asarray(spacing))
    return path


def memory_per_box(case: Path, work: Path, env: dict) -> tuple[dict, float]:
    """Peak RSS of the 241-box case at --max-boxes 1, 4, 16, and the slope per box."""
    rss = {n: run_case(ROOT / "predict.sh", case, work, env, "--max-boxes", str(n))["rss"] for n in (1, 4, 16)}
    slope = np.polyfit(list(rss), list(rss.values()), 1)[0]
    return rss, float(slope)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default=BASELINE, help="git revision to compare with (default %(default)s)")
    ap.add_argument("--runs", type=int, default=3, help="measured runs per figure (median)")
    ap.add_argument("--match", default="", help="only the cases whose file name contains this text")
    ap.add_argument("--versions", default="", help="only the versions whose label contains one of these "
                    "comma-separated texts (the baseline and the default always run)")
    ap.add_argument("--only", choices=("3d", "windows", "startup"),
                    help="3d: only the 3D cases, default vs --precision fp32 (and int8 without the guard) vs "
                         "baseline; windows: the cases of "
                         "many small boxes (2D, 3D, and the 3D nuclei tiled to 124 slices and 408 labels), "
                         "default vs --decoder-windows off vs baseline, with the label maps compared; "
                         "startup: the floor (interpreter, imports) and the 1-box case warm and cold, vs baseline")
    args = ap.parse_args(argv)
    print(f"CPU: {describe()}")
    tmp = Path(tempfile.mkdtemp(prefix="qmedsam-bench-"))
    base = Baseline(args.baseline, tmp)
    try:
        cases = [one_box_case(tmp), ROOT / "samples" / "inputs" / "2DBox_Microscope_0003.npz",
                 large_case(tmp, 1920, 2560, 241, seed=1920), ROOT / "samples" / "inputs" / "3DBox_CT_0001.npz",
                 coronal_ct_case(tmp)]
        versions = {f"baseline {args.baseline}": (base.path / "predict.sh", ()),
                    "this, --zoom off": (ROOT / "predict.sh", ("--zoom", "off")),
                    "this, no windows": (ROOT / "predict.sh", ("--decoder-windows", "off")),
                    "this, --precision fp32": (ROOT / "predict.sh", ("--precision", "fp32")),
                    "this, no interpolation": (ROOT / "predict.sh", ("--interpolate-slices", "0")),
                    "this, --float-ops f32": (ROOT / "predict.sh", ("--float-ops", "f32")),
                    "this (default)": (ROOT / "predict.sh", ())}
        if args.only == "3d":             # the encoder-bound volumes: the default against --precision fp32
            cases = [c for c in cases if c.name.startswith("3D")]
            versions = {k: v for k, v in versions.items()
                        if k.startswith(("baseline", "this, --precision", "this, no interp", "this, --float-ops",
                                         "this ("))}
        elif args.only == "startup":      # start-up: the floor, then the 1-box case warm and cold
            versions = {k: v for k, v in versions.items() if k.startswith(("baseline", "this ("))}
        elif args.only == "windows":      # decoder-bound: many small boxes, 2D and 3D
            cases = [cases[2], cases[1], ROOT / "samples" / "inputs" / "3DBox_Microscope_0004.npz",
                     tiled_3d_case(tmp)]
            versions = {k: v for k, v in versions.items() if k.startswith(("baseline", "this, no windows", "this ("))}
        cases = [c for c in cases if args.match in c.name]
        if not cases:
            ap.error(f"no case's name contains {args.match!r}")
        encoder, why = choose_encoder("auto")
        print(f"--precision auto (the default) runs the encoder {why}")
        if encoder == FLOAT_ENCODER or args.only == "3d":
            # the int8 encoder side by side where it is not the default; on the 3D cases, int8
            # without the guard: the most the default could gain over --precision fp32
            versions["this, --precision int8"] = (ROOT / "predict.sh", ("--precision", "int8"))
        if args.versions:
            wanted = [w.strip() for w in args.versions.split(",") if w.strip()]
            versions = {k: v for k, v in versions.items()
                        if k.startswith(("baseline", "this (")) or any(w in k for w in wanted)}
        chosen = settings()
        if settings_note(chosen):
            print(settings_note(chosen))
        for setting, extra_env in chosen.items():
            env = dict(os.environ, **extra_env)
            env.pop("PYTHONPATH", None)              # each predict.sh puts its own src first
            env["PYTHON"] = sys.executable           # the worktree has no .venv of its own
            opts = ("--float-ops", "f32") if extra_env else ()
            if args.only == "startup":
                print(f"\n[{setting}] fresh process per run, median of {args.runs}:")
                startup({k: (sh, (*extra, *opts)) for k, (sh, extra) in versions.items()}, cases[0],
                        tmp / f"startup-{setting}", env, args.runs)
                continue
            here = {k: v for k, v in versions.items() if not (opts and "--float-ops" in v[1])}   # f32 already
            print(f"\n[{setting}{' (float leftovers f32)' if opts else ''}] warm compile cache, fresh process per "
                  f"run, median of {args.runs}:")
            print(f"  {'case':30s} {'boxes':>5s} " + " ".join(f"{v:>18s}" for v in here)
                  + "  ratios (baseline/each)  1st encoder output s  peak RSS MB (baseline -> each)")
            for case in cases:
                res = timed(here, case, tmp / f"work-{setting}", env, args.runs, *opts)
                old, *this = res.values()
                boxes = len(np.atleast_2d(np.load(case)["boxes"]))
                print(f"  {case.name:30s} {boxes:5d} " + " ".join(f"{r['wall']:17.2f}s" for r in res.values())
                      + "  " + " / ".join(f"{old['wall'] / r['wall']:5.2f}x" for r in this)
                      + f"  {old['first']:5.2f} -> " + "/".join(f"{r['first']:4.2f}" for r in this)
                      + f"  {old['rss']:5.0f} -> " + "/".join(f"{r['rss']:4.0f}" for r in this)
                      + _versus(res, tmp / f"work-{setting}", list(here), case))
        if args.only:
            return
        print(f"\npreprocessing a 3024x4032 RGB photo (resize to 256, normalise, pad): "
              f"{preprocessing_seconds():.3f} s")
        rss, slope = memory_per_box(cases[2], tmp / "memory", dict(os.environ))
        print(f"decoder memory: peak RSS of the 241-box case at --max-boxes 1/4/16: "
              f"{' / '.join(f'{v:.0f}' for v in rss.values())} MB -> {slope:.1f} MB per box in a block")
    finally:
        base.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
