"""``make bench-mix``: the precision settings on a case set shaped like a real one, organiser-style.

Every case of the mix (:mod:`tools.case_mix`: mostly short 3D cases and 1-box 2D images, a few
many-box images and long volumes) runs as the organisers run it, one fresh ``predict.sh`` process
on a one-case inputs folder with a warm compile cache, in each precision setting back to back
(the settings interleaved case by case, their order alternating, because a shared VM's speed
drifts by tens of percent within an hour), in each CPU setting (:mod:`benchmarks.cpu`).  Printed:
each case's wall seconds per setting and its ratio to ``--precision fp32``, the total and
geometric-mean ratios, DSC/NSD against the ground truth per setting, and the cost ledger the
predictor writes (``efficiency.csv``: which encoder ran and why, model loading, encoder passes).
Results go to ``out/bench-mix/results.json`` and a figure beside it.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.cpu import SETTINGS, describe, settings, settings_note

ROOT = Path(__file__).resolve().parents[1]
# label -> predictor options; the first is the product's default, 'fp32' the reference of every ratio
VERSIONS = {
    "default": [],
    "fp32": ["--precision", "fp32"],
    "int8, no guard": ["--precision", "int8"],
    "bf16 float": ["--precision", "fp32", "--float-ops", "bf16"],
}
REFERENCE = "fp32"
NEEDS_BF16 = ("bf16 float",)   # emulated, not measured, under an ISA cap without bf16 (the organisers' CPUs)
SLOWER_LIMIT = 1.13          # no case may take more than this times fp32's time (issue 38)


def run_once(case: Path, work: Path, cache: Path, env: dict, options: list[str]) -> dict:
    """One fresh predictor process on a folder holding only ``case``: wall seconds and its ledger row.
    ``options`` may start with another revision's predict.sh (a baseline: :func:`baseline_version`)."""
    inputs, outputs = work / "inputs", work / "outputs"
    shutil.rmtree(work, ignore_errors=True)
    inputs.mkdir(parents=True)
    os.link(case, inputs / case.name) if case.stat().st_dev == inputs.stat().st_dev else shutil.copy(case, inputs)
    t = time.perf_counter()
    script, options = (options[0], options[1:]) if options and options[0].endswith("predict.sh") else \
        (str(ROOT / "predict.sh"), options)
    proc = subprocess.run(["sh", script, "-i", str(inputs), "-o", str(outputs), "-q",
                           "--cache", str(cache), *options], capture_output=True, encoding="utf-8",
                          errors="replace", env=env)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{case.name} {options}: exit {proc.returncode}: {proc.stderr.strip()[-800:]}")
    with open(outputs / "efficiency.csv", newline="") as f:
        row = next(csv.DictReader(f))
    return {"wall": wall, "ledger": row, "pred": str(outputs / case.name)}


def baseline_version(rev: str, out: Path) -> tuple[str, list[str]]:
    """('baseline REV', its predict.sh and models): the product's default at another revision, from
    a git worktree of it (kept under ``out``) with this checkout's float models."""
    from benchmarks.same_maps import worktree

    tree = worktree(rev, out)
    return f"baseline {rev}", [str(tree / "predict.sh"), "--models", str(tree / "models")]


def geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def measure(cases: list[Path], gts: Path, work: Path, versions: dict, setting: str, warm: list[Path],
            runs: int = 1) -> dict:
    """Every case in every version, interleaved (``runs`` rounds of the versions per case, the
    median wall time kept); returns {case: {version: figures}}."""
    from qmedsam_eval.scoring import score_case

    env = dict(os.environ, **SETTINGS[setting], PYTHON=sys.executable)   # a baseline worktree has no .venv
    caches = {v: work / setting / f"cache-{i}" for i, v in enumerate(versions)}
    for case in warm:                     # fill each version's compile cache with what it loads
        for v, opts in versions.items():
            run_once(case, work / setting / "warm", caches[v], env, opts)
    out: dict = {}
    for n, case in enumerate(cases):
        order = list(versions) if n % 2 == 0 else list(reversed(versions))
        res, walls = {}, {v: [] for v in versions}
        for _ in range(runs):
            for v in order:
                r = run_once(case, work / setting / f"run-{list(versions).index(v)}", caches[v], env, versions[v])
                walls[v].append(r["wall"])
                if v not in res:             # the label map is the same every round: scored once
                    score = score_case(gts / case.name, Path(r["pred"]))
                    res[v] = {"dsc": score.dsc, "nsd": score.nsd, "ledger": r["ledger"]}
        for v in versions:
            res[v]["wall"] = statistics.median(walls[v])
            res[v]["walls"] = walls[v]
        out[case.name] = {v: res[v] for v in versions}
        ref = res[REFERENCE]["wall"]
        shown = "  ".join(f"{v} {res[v]['wall']:6.2f} s ({ref / res[v]['wall']:.2f}x, DSC {res[v]['dsc']:.4f})"
                          for v in versions)
        print(f"  [{n + 1}/{len(cases)}] {case.name:34s} {shown}  default: {res['default']['ledger'].get('policy', '')}",
              flush=True)
    return out


def summary(results: dict, versions) -> list[str]:
    """Total and geometric-mean speed ratios against the reference, accuracy per version."""
    lines = []
    names = list(results)
    ref = [results[c][REFERENCE]["wall"] for c in names]
    for v in versions:
        walls = [results[c][v]["wall"] for c in names]
        ratios = [r / w for r, w in zip(ref, walls)]
        dsc = [results[c][v]["dsc"] for c in names]
        nsd = [results[c][v]["nsd"] for c in names]
        d_ref = [results[c][REFERENCE]["dsc"] for c in names]
        worst = min(range(len(names)), key=lambda i: dsc[i] - d_ref[i])
        slowest = min(range(len(names)), key=lambda i: ratios[i])
        lines.append(f"  {v:16s} total {sum(ref) / sum(walls):.2f}x, geomean {geomean(ratios):.2f}x, slowest case "
                     f"{ratios[slowest]:.2f}x ({names[slowest]}); DSC {sum(dsc) / len(dsc):.4f} NSD "
                     f"{sum(nsd) / len(nsd):.4f}; worst DSC vs {REFERENCE} {100 * (dsc[worst] - d_ref[worst]):+.2f} "
                     f"points ({names[worst]})")
    return lines


def against_baseline(results: dict, label: str) -> list[str]:
    """The default against a baseline revision's, case by case: the ratio of median walls, and
    whether the default is slower by more than the run's noise (the larger spread of either's rounds)."""
    lines, slower = [], []
    for case, res in results.items():
        base, ours = res[label], res["default"]
        noise = max(max(r["walls"]) - min(r["walls"]) for r in (base, ours))
        late = ours["wall"] - base["wall"]
        if late > noise:
            slower.append(case)
        rss = "/".join(str(r["ledger"].get("peak_rss_mb", "?")) for r in (base, ours))
        lines.append(f"    {case:34s} {base['wall']:6.2f} -> {ours['wall']:6.2f} s ({base['wall'] / ours['wall']:.3f}x, "
                     f"noise {noise:.2f} s; peak RSS {rss} MB){'  SLOWER' if late > noise else ''}")
    total = sum(r[label]["wall"] for r in results.values()) / sum(r["default"]["wall"] for r in results.values())
    ratios = [r[label]["wall"] / r["default"]["wall"] for r in results.values()]
    lines.append(f"  default vs {label}: total {total:.3f}x, geomean {geomean(ratios):.3f}x; slower beyond noise: "
                 f"{', '.join(slower) or 'none'}")
    return lines


def spread(all_results: dict, version: str = "default") -> str:
    """The largest move of one case's DSC between CPU settings, in points."""
    if len(all_results) < 2:
        return "one CPU setting measured: no spread"
    moves = []
    for case in next(iter(all_results.values())):
        d = [res[case][version]["dsc"] for res in all_results.values()]
        moves.append((100 * (max(d) - min(d)), case))
    worst = max(moves)
    return f"  {version}: largest DSC move of one case between CPU settings {worst[0]:.2f} points ({worst[1]})"


def figure(all_results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(all_results), figsize=(7 * len(all_results), 6), squeeze=False)
    for ax, (setting, res) in zip(axes[0], all_results.items()):
        names = list(res)
        for v in res[names[0]]:
            if v == REFERENCE:
                continue
            ax.plot([res[c][REFERENCE]["wall"] / res[c][v]["wall"] for c in names], range(len(names)), "o", label=v,
                     alpha=1.0 if v == "default" else 0.5)
        ax.axvline(1.0, color="grey", lw=1)
        ax.axvline(1 / SLOWER_LIMIT, color="red", lw=1, ls=":")
        ax.set_yticks(range(len(names)), [n.replace(".npz", "") for n in names], fontsize=8)
        ax.set_xlabel(f"speed vs --precision {REFERENCE} (x, higher is faster)")
        ax.set_title(setting)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mix", type=Path, default=ROOT / "out" / "case-mix", help="made by tools.case_mix if missing")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench-mix")
    ap.add_argument("--match", default="", help="only cases whose name holds this text")
    ap.add_argument("--settings", default="", help="CPU settings to run, comma-separated (default: all that differ here)")
    ap.add_argument("--runs", type=int, default=1, help="rounds per case; the median wall time is kept")
    ap.add_argument("--resume", type=Path, default=None, help="a results.json whose settings are kept, not rerun")
    ap.add_argument("--versions", default="", help="precision settings to run besides default and fp32, e.g. 'int8'")
    ap.add_argument("--baseline", default="", help="also the default of this git revision (e.g. the previous one)")
    args = ap.parse_args(argv)
    if not (args.mix / "inputs").is_dir():
        from tools.case_mix import write_mix

        write_mix(args.mix)
    cases = sorted(p for p in (args.mix / "inputs").glob("*.npz") if args.match in p.name)
    chosen = settings()
    if args.settings:
        chosen = {k: v for k, v in chosen.items() if k in args.settings.split(",")}
    versions = {k: v for k, v in VERSIONS.items()
                if k in ("default", REFERENCE) or not args.versions or any(t in k for t in args.versions.split(","))}
    if args.baseline:
        label, options = baseline_version(args.baseline, args.out)
        versions[label] = options
    warm = [p for p in cases if p.name in ("2DBox_CT_onebox.npz", "3DBox_Microscope_nuclei31.npz")] or cases[:1]
    print(f"CPU: {describe()}")
    if settings_note(chosen):
        print(settings_note(chosen))
    print(f"{len(cases)} cases from {args.mix}; versions: {', '.join(versions)}; one fresh process per case and "
          f"version, warm compile cache, versions interleaved case by case; median of {args.runs} round(s)")
    args.out.mkdir(parents=True, exist_ok=True)
    all_results = json.loads(args.resume.read_text())["results"] if args.resume else {}
    for setting in (s for s in chosen if s not in all_results):
        print(f"{setting}:", flush=True)
        here = {k: v for k, v in versions.items() if not (SETTINGS[setting] and k in NEEDS_BF16)}
        all_results[setting] = measure(cases, args.mix / "gts", args.out / "work", here, setting, warm, args.runs)
        for line in summary(all_results[setting], here):
            print(line)
        for label in (v for v in here if v.startswith("baseline")):
            for line in against_baseline(all_results[setting], label):
                print(line)
        # saved after each setting: --resume takes a stopped run up from there
        (args.out / "results.json").write_text(json.dumps({"cpu": describe(), "results": all_results}, indent=1))
    print(spread(all_results))
    figure(all_results, args.out / "bench-mix.png")
    print(f"results: {args.out / 'results.json'}, figure: {args.out / 'bench-mix.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
