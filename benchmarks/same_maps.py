"""``make same-maps``: this checkout's label maps against a baseline revision's, array for array.

A change to the runtime's shape must not change what it writes.  Both revisions run the bundled
samples and the public case mix (:mod:`tools.case_mix`) through ``predict.sh`` in every
``--precision``, ``--mode-3d fixed`` and (3D cases) ``propagate``, in each CPU setting
(:mod:`benchmarks.cpu`); every case's ``segs`` must be equal in shape, dtype and every value.
The baseline's maps are kept under ``out/same-maps/<rev>`` (a rerun reuses them).  No timing.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.cpu import SETTINGS, describe, settings

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("auto", "int8", "fp32")
MODES = ("fixed", "propagate")


def worktree(rev: str, out: Path) -> Path:
    """A git worktree of ``rev`` (its runtime and int8 models), with this checkout's float models."""
    path = out / f"tree-{rev}"
    if not path.is_dir():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(path), rev], check=True)
    fp32 = path / "models" / "fp32"
    if not fp32.exists():
        fp32.symlink_to(ROOT / "models" / "fp32")
    return path


def case_folder(out: Path, mix: Path, only_3d: bool) -> Path:
    """The samples and the mix's cases in one inputs folder (hard links or copies)."""
    folder = out / ("inputs-3d" if only_3d else "inputs")
    if folder.is_dir():
        return folder
    tmp = folder.with_suffix(".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for src in (ROOT / "samples" / "inputs", mix / "inputs"):
        for p in sorted(src.glob("*.npz")):
            if not only_3d or p.name.startswith("3D"):
                shutil.copy(p, tmp / p.name)
    tmp.rename(folder)
    return folder


def predict(tree: Path, inputs: Path, outputs: Path, cache: Path, setting: str, options: list[str]) -> None:
    """One run of ``tree``'s predict.sh over ``inputs`` (skipped where a whole earlier run is there)."""
    if (outputs / "efficiency.csv").is_file():
        return
    shutil.rmtree(outputs, ignore_errors=True)
    env = dict(os.environ, **SETTINGS[setting], PYTHON=sys.executable)
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(["sh", str(tree / "predict.sh"), "-i", str(inputs), "-o", str(outputs), "-q",
                           "--cache", str(cache), "--models", str(tree / "models"), *options],
                          capture_output=True, encoding="utf-8", errors="replace", env=env)
    if proc.returncode != 0:
        shutil.rmtree(outputs, ignore_errors=True)
        raise RuntimeError(f"{tree.name} {options}: exit {proc.returncode}: {proc.stderr.strip()[-800:]}")


def differences(a: Path, b: Path, names: list[str]) -> list[str]:
    """The cases whose ``segs`` differ between folders ``a`` and ``b``, each with how."""
    out = []
    for name in names:
        with np.load(a / name) as x, np.load(b / name) as y:
            s, t = x["segs"], y["segs"]
        if s.shape != t.shape or s.dtype != t.dtype:
            out.append(f"{name}: {s.shape} {s.dtype} vs {t.shape} {t.dtype}")
        elif not np.array_equal(s, t):
            out.append(f"{name}: {int((s != t).sum())} voxels differ")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, help="git revision to compare with")
    ap.add_argument("--mix", type=Path, default=ROOT / "out" / "case-mix", help="made by tools.case_mix if missing")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "same-maps")
    ap.add_argument("--only-baseline", action="store_true", help="write the baseline's maps and stop")
    ap.add_argument("--settings", default="", help="CPU settings, comma-separated (default: all that differ here)")
    args = ap.parse_args(argv)
    if not (args.mix / "inputs").is_dir():
        from tools.case_mix import write_mix

        write_mix(args.mix)
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.baseline], capture_output=True,
                         text=True, check=True).stdout.strip()
    args.out.mkdir(parents=True, exist_ok=True)
    trees = {rev: worktree(rev, args.out)}
    if not args.only_baseline:
        trees["this"] = ROOT
    chosen = [s for s in settings() if not args.settings or s in args.settings.split(",")]
    print(f"CPU: {describe()}", flush=True)
    compared = cases = 0
    failed: list[str] = []
    for setting in chosen:
        for precision in PRECISIONS:
            for mode in MODES:
                inputs = case_folder(args.out, args.mix, only_3d=mode != "fixed")
                names = sorted(p.name for p in inputs.glob("*.npz"))
                got = {}
                for who, tree in trees.items():
                    got[who] = args.out / (rev if who == rev else "this") / setting / f"{precision}-{mode}"
                    if who == "this":
                        shutil.rmtree(got[who], ignore_errors=True)
                    predict(tree, inputs, got[who], args.out / f"cache-{who}-{setting}", setting,
                            ["--precision", precision, "--mode-3d", mode])
                if args.only_baseline:
                    print(f"  {setting} {precision} {mode}: {len(names)} baseline maps written", flush=True)
                    continue
                diff = differences(got[rev], got["this"], names)
                compared += 1
                cases += len(names)
                failed += [f"{setting} {precision} {mode}: {d}" for d in diff]
                print(f"  {setting:14s} --precision {precision:5s} --mode-3d {mode:9s} {len(names)} cases: "
                      f"{'identical' if not diff else f'{len(diff)} differ'}", flush=True)
    if not args.only_baseline:
        print(f"{compared} runs, {cases} label maps compared with {rev}: "
              f"{'all identical' if not failed else f'{len(failed)} differ'}")
        for line in failed:
            print(f"  {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
