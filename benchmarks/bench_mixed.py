"""``make bench-mixed``: mixed precision by measurement, per encoder layer group.

For each group of the int8 encoder (``training.model.surgery.ENCODER_GROUPS``: the patch
embedding, stage 0, each stage's attention linears, attention products, local convolutions and
MLPs, the patch merges, the neck), a variant of the committed QCDQ encoder with only that group in
float (``training.onnx_float_groups``; no new calibration), measured in each CPU setting in a
fresh process: encoder milliseconds per slice (median of repeated runs) and the held-out mask
agreement with FP32 per modality.  Then the groups are ranked by agreement won per millisecond
lost and made float cumulatively: the Pareto curve between all-int8 and the float encoder,
printed and drawn (``docs/mixed-precision.png``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.cpu import SETTINGS, describe, settings

ROOT = Path(__file__).resolve().parents[1]
ALL_INT8, ALL_FLOAT = "all int8", "float encoder"
ROUNDS, REPEATS = 5, 3          # interleaved: every variant timed in each round (the VM drifts)


def variant_folders(models: Path, work: Path, variants: dict[str, list[str]]) -> dict[str, Path]:
    """A models folder per variant: the committed folder with its encoder replaced by the QCDQ
    ONNX with ``groups`` bypassed, converted to IR."""
    import onnx
    import openvino as ov

    from training.onnx_float_groups import make_float

    out = {}
    for name, groups in variants.items():
        folder = work / name.replace(" ", "_").replace("+", "_")
        folder.mkdir(parents=True, exist_ok=True)
        for f in models.iterdir():
            if f.is_file() and not f.name.startswith("encoder."):
                (folder / f.name).symlink_to(f.resolve())
        proto = onnx.load(str(models / "reference" / "encoder.onnx"))
        make_float(proto, groups)
        onnx.save(proto, str(folder / "encoder.onnx"))
        ov.save_model(ov.convert_model(str(folder / "encoder.onnx")), str(folder / "encoder.xml"),
                      compress_to_fp16=False)
        (folder / "encoder.onnx").unlink()
        out[name] = folder
    return out


def encoder_ms(engines: dict, x: np.ndarray) -> dict[str, float]:
    """Median encoder milliseconds of each engine, the engines timed in turn in every round."""
    for e in engines.values():
        e.encode(x)
    times = {name: [] for name in engines}
    for _ in range(ROUNDS):
        for name, e in engines.items():
            for _ in range(REPEATS):
                t = time.perf_counter()
                e.encode(x)
                times[name].append(time.perf_counter() - t)
    return {name: 1000 * statistics.median(v) for name, v in times.items()}


def measure(models: Path, folders: dict[str, str]) -> dict:
    from benchmarks.bench_model import held_out_agreement
    from benchmarks.setups import Setup
    from qmedsam.model.spec import ENCODER_FLOAT
    from qmedsam.precision.setting import float_ops_for

    ops = float_ops_for("auto")
    engines = {"fp32": Setup.open(models / "fp32", "f32")}
    for name, folder in folders.items():
        engines[name] = Setup.open(Path(folder), ops)
    engines[ALL_FLOAT] = Setup.open(models, "f32", ENCODER_FLOAT.name)
    x = np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)
    ms = encoder_ms({name: e for name, e in engines.items() if name != "fp32"}, x)
    held = held_out_agreement(engines)
    mods = list(held)
    return {name: {"ms": ms[name], "agreement": {m: held[m][name] for m in mods},
                   "mean": float(np.mean([held[m][name] for m in mods]))}
            for name in ms}


def _run(setting: str, models: Path, folders: dict[str, Path]) -> dict:
    env = dict(os.environ, **SETTINGS[setting])
    spec = json.dumps({k: str(v) for k, v in folders.items()})
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_mixed", "--measure", spec,
                           "--models", str(models)], env=env, stdout=subprocess.PIPE,
                          encoding="utf-8", errors="replace", check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ranked(single: dict, groups: list[str]) -> list[str]:
    """Groups by agreement won per millisecond lost (default setting), best first."""
    base = single[ALL_INT8]

    def gain(g):
        won = single[g]["mean"] - base["mean"]
        lost = max(single[g]["ms"] - base["ms"], 0.5)
        return won / lost
    return sorted(groups, key=gain, reverse=True)


def report(results: dict, order: list[str]) -> None:
    for setting, rows in results.items():
        base = rows[ALL_INT8]
        mods = list(base["agreement"])
        print(f"\n### {setting}\n")
        print("| variant | encoder ms | ms vs all int8 | mean agreement | " + " | ".join(mods) + " |")
        print("|---|---:|---:|---:|" + "---:|" * len(mods))
        for name, r in rows.items():
            print(f"| {name} | {r['ms']:.1f} | {r['ms'] - base['ms']:+.1f} | {r['mean']:.4f} | "
                  + " | ".join(f"{r['agreement'][m]:.4f}" for m in mods) + " |")
    print("\ncumulative order (agreement won per ms lost, default setting): " + ", ".join(order))


def draw(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    for ax, (setting, rows) in zip(axes[0], results.items()):
        singles = {k: r for k, r in rows.items() if not k.startswith(("float up to", ALL_INT8 + " ("))}
        curve = [rows[ALL_INT8]] + [r for k, r in rows.items() if k.startswith("float up to")] + [rows[ALL_FLOAT]]
        ax.scatter([r["ms"] for r in singles.values()], [r["mean"] for r in singles.values()], s=12,
                   color="tab:gray", label="one group float")
        ax.plot([r["ms"] for r in curve], [r["mean"] for r in curve], "o-", color="tab:blue",
                label="groups made float cumulatively")
        for k in (ALL_INT8, ALL_FLOAT):
            ax.annotate(k, (rows[k]["ms"], rows[k]["mean"]), fontsize=8)
        ax.set_title(setting)
        ax.set_xlabel("encoder ms per slice")
        ax.set_ylabel("held-out mask Dice vs FP32 (mean of modalities)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--steps", type=int, default=6, help="cumulative steps of the curve")
    ap.add_argument("--figure", type=Path, default=ROOT / "docs" / "mixed-precision.png")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.models, json.loads(args.measure))))
        return
    import onnx

    from training.onnx_float_groups import groups_present

    print(f"CPU: {describe()}")
    groups = list(groups_present(onnx.load(str(args.models / "reference" / "encoder.onnx"))))
    chosen = settings()
    with tempfile.TemporaryDirectory() as tmp:
        single = {ALL_INT8: [], **{g: [g] for g in groups}}
        folders = variant_folders(args.models, Path(tmp) / "single", single)
        results = {}
        for setting in chosen:
            print(f"measuring one group at a time: {setting}", file=sys.stderr, flush=True)
            results[setting] = _run(setting, args.models, folders)
        order = ranked(results["default"], groups)
        steps = {ALL_INT8: [], **{f"float up to {g}": order[:i + 1] for i, g in enumerate(order[:args.steps])}}
        folders = variant_folders(args.models, Path(tmp) / "cumulative", steps)
        for setting in chosen:
            print(f"measuring the cumulative curve: {setting}", file=sys.stderr, flush=True)
            curve = _run(setting, args.models, folders)
            curve[ALL_INT8 + " (curve run)"] = curve.pop(ALL_INT8)
            results[setting].update(curve)
        shutil.rmtree(tmp, ignore_errors=True)
    report(results, order)
    draw(results, args.figure)
    print(f"\nfigure: {args.figure}")


if __name__ == "__main__":
    main()
