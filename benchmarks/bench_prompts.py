"""``make bench-prompts``: the successors' prompts, organiser-style, on the labelled public volumes.

For every volume of the case mix (``tools/case_mix.py``: short CT, MR and nuclei structures, the
whole CT chest, its coronal reslice, the 3D nuclei), one fresh process per run with the outputs
folder kept between runs (its compile cache warm after a first, uncounted run), as the organisers
run a container per case and per interaction round:

* (a) the 2024 3D box of each object (told the z range), ``3DBox_*``;
* (b) the RECIST line made from the labels (the longest diameter on each object's largest slice);
* (c) the interactive protocol: round 1 the middle-slice box with the z range, then five click
  rounds, each click where the organisers' evaluation puts it (``benchmarks/prompt_cases.py``),
  ``prev_pred`` the previous round's output.

Scores by the organisers' rules (DSC, NSD where DSC > 0.2; DSC AUC and NSD AUC by the trapezoid
over the five click rounds); seconds of each whole process, its peak RSS (``wait4``), and the
slices it encoded (``efficiency.csv``).  Both CPU settings where the cap changes something.
Resumable: a run already in ``--out``'s results is not run again (``--fresh`` starts over).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.cpu import describe, settings, settings_note
from benchmarks.prompt_cases import next_click, object_array, recist_from_labels, round1_boxes
from qmedsam_eval.metrics import case_scores

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 6


def volumes(root: Path, only=None):
    """(stem, modality, image, gt, spacing, path) of each labelled volume of a case-mix folder."""
    for path in sorted((root / "inputs").glob("3D*.npz")):
        if only and not any(o in path.stem for o in only):
            continue
        c, g = np.load(path), np.load(root / "gts" / path.name)
        spacing = tuple(float(v) for v in c["spacing"]) if "spacing" in c.files else (1.0, 1.0, 1.0)
        yield path.stem, path.stem.split("_")[1], c["imgs"], g["gts"], spacing, path


def run_one(case: Path, work: Path, env: dict) -> dict:
    """One organiser-style process on ``case`` alone: its wall seconds, peak RSS, output and row."""
    inputs, outputs = work / "inputs", work / "outputs"
    shutil.rmtree(inputs, ignore_errors=True)
    inputs.mkdir(parents=True)
    shutil.copyfile(case, inputs / case.name)
    cmd = [sys.executable, "-m", "qmedsam.predict", "-i", str(inputs), "-o", str(outputs), "-q"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    err = proc.stderr.read().decode()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{case.name}: exit {proc.returncode}: {err.strip()}")
    with open(outputs / "efficiency.csv") as f:
        row = next(r for r in csv.DictReader(f) if r["case"] == case.name)
    segs = np.load(outputs / case.name)["segs"]
    return {"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024, "slices_encoded": int(row["slices_encoded"]),
            "segs": segs}


def score(gt, segs, spacing) -> dict:
    dsc, nsd = case_scores(gt, segs, spacing)
    return {"dsc": dsc, "nsd": nsd}


def interactive(stem, modality, image, gt, spacing, work, env, say) -> list[dict]:
    boxes = round1_boxes(gt)
    classes = len(boxes)
    clicks = [{"fg": [], "bg": []} for _ in range(classes)]
    order = [[] for _ in range(classes)]
    case = work / "cases" / f"{modality}_Inter_{stem.split('_', 2)[-1]}.npz"
    # round 1 meets an empty embeddings cache, as a new case does (the case mix cuts several volumes
    # from one CT, whose slices a kept cache would otherwise already hold)
    shutil.rmtree(work / "outputs" / ".qmedsam-cache" / "embeddings", ignore_errors=True)
    rounds, pred = [], None
    for r in range(ROUNDS):
        members = {"imgs": image, "spacing": np.asarray(spacing), "boxes": object_array(boxes)}
        if r:
            for k in range(classes):
                c = next_click(gt, pred, k + 1)
                order[k].append(c[0] if c else None)
                if c:
                    clicks[k][c[0]].append(list(c[1]))
            members.update(clicks=object_array(clicks), clicks_order=object_array(order), prev_pred=pred)
        np.savez_compressed(case, **members)
        got = run_one(case, work, env)
        pred = got.pop("segs")
        rounds.append(dict(got, **score(gt, pred, spacing)))
        say(f"  interactive round {r + 1}: DSC {rounds[-1]['dsc']:.4f}, {got['seconds']:.2f} s, "
            f"{got['slices_encoded']} slices encoded")
    return rounds


def measure(cases: Path, out: Path, name: str, env: dict, only, results: dict, save, say) -> None:
    work = out / name
    (work / "cases").mkdir(parents=True, exist_ok=True)
    data = list(volumes(cases, only))
    warm = data[0][5]
    say(f"[{name}] warm-up run (compile cache), not counted")
    run_one(warm, work, env)
    for i, (stem, modality, image, gt, spacing, path) in enumerate(data):
        key = f"{name}/{stem}"
        if key in results:
            continue
        say(f"[{name}] {i + 1}/{len(data)} {stem}: {len(np.unique(gt)) - 1} objects, {image.shape[0]} slices")
        got = run_one(path, work, env)
        row = {"box": dict(got, **score(gt, got.pop("segs"), spacing))}
        recist = work / "cases" / f"{modality}_Lesion_{stem.split('_', 2)[-1]}.npz"
        np.savez_compressed(recist, imgs=image, spacing=np.asarray(spacing), recist=recist_from_labels(gt))
        got = run_one(recist, work, env)
        row["recist"] = dict(got, **score(gt, got.pop("segs"), spacing))
        say(f"  box DSC {row['box']['dsc']:.4f} {row['box']['seconds']:.2f} s; RECIST DSC {row['recist']['dsc']:.4f} "
            f"{row['recist']['seconds']:.2f} s, {row['recist']['peak_rss_mb']:.0f} MB")
        row["interactive"] = interactive(stem, modality, image, gt, spacing, work, env, say)
        results[key] = row
        save()


def auc(values) -> float:
    return float(np.trapezoid(values[1:ROUNDS])) if len(values) >= ROUNDS else float("nan")


def summary(results: dict, setting: str) -> dict:
    rows = {k.split("/", 1)[1]: v for k, v in results.items() if k.startswith(setting + "/")}
    if not rows:
        return {}
    box = np.array([r["box"]["dsc"] for r in rows.values()])
    rec = np.array([r["recist"]["dsc"] for r in rows.values()])
    by_round = np.array([[x["dsc"] for x in r["interactive"]] for r in rows.values()])
    nsd_round = np.array([[x["nsd"] for x in r["interactive"]] for r in rows.values()])
    slow = {k: r["recist"]["seconds"] / r["box"]["seconds"] for k, r in rows.items()}
    # the MR slabs' label is the head cut to a few slices (tools/case_mix.py): no RECIST line can know
    # where such an object "ends", so the RECIST gap is also given without them
    ends = [k for k in rows if "_MR_" not in k]
    big = [(k, r) for k, r in rows.items() if r["interactive"][0]["slices_encoded"] >= 50]
    click_cost = {k: max(x["seconds"] for x in r["interactive"][1:]) / r["interactive"][0]["seconds"] for k, r in big}
    return {
        "cases": len(rows),
        "box": {"dsc": box.mean(), "nsd": np.mean([r["box"]["nsd"] for r in rows.values()]),
                "seconds_geomean": float(np.exp(np.mean(np.log([r["box"]["seconds"] for r in rows.values()]))))},
        "recist": {"dsc": rec.mean(), "nsd": np.mean([r["recist"]["nsd"] for r in rows.values()]),
                   "seconds_geomean": float(np.exp(np.mean(np.log([r["recist"]["seconds"] for r in rows.values()])))),
                   "dsc_minus_box_points": 100 * (rec.mean() - box.mean()),
                   "dsc_minus_box_points_without_mr_slabs": 100 * float(np.mean(
                       [rows[k]["recist"]["dsc"] - rows[k]["box"]["dsc"] for k in ends])) if ends else None,
                   "seconds_vs_box_max": max(slow.values()), "seconds_vs_box": slow,
                   "peak_rss_mb_max": max(r["recist"]["peak_rss_mb"] for r in rows.values())},
        "interactive": {"dsc_by_round": by_round.mean(0).tolist(), "nsd_by_round": nsd_round.mean(0).tolist(),
                        "dsc_auc": float(np.mean([auc(d) for d in by_round])),
                        "nsd_auc": float(np.mean([auc(d) for d in nsd_round])),
                        "gain_after_5_clicks_points": float(100 * (by_round[:, -1] - by_round[:, 0]).mean()),
                        "worst_case_change_points": float(100 * (by_round[:, -1] - by_round[:, 0]).min()),
                        "seconds_by_round": np.mean([[x["seconds"] for x in r["interactive"]] for r in rows.values()],
                                                    0).tolist(),
                        "click_round_vs_box_round_where_box_encodes_50_plus": click_cost}}


def draw(results: dict, settings_run, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(settings_run), figsize=(6 * len(settings_run), 4.2), squeeze=False)
    for ax, setting in zip(axes[0], settings_run):
        rows = {k.split("/", 1)[1]: v for k, v in results.items() if k.startswith(setting + "/")}
        for name, r in rows.items():
            ax.plot(range(1, ROUNDS + 1), [x["dsc"] for x in r["interactive"]], color="0.75", lw=1)
        if rows:
            mean = np.mean([[x["dsc"] for x in r["interactive"]] for r in rows.values()], 0)
            ax.plot(range(1, ROUNDS + 1), mean, "o-", color="C0", lw=2.5, label="interactive, mean")
            ax.axhline(np.mean([r["box"]["dsc"] for r in rows.values()]), color="C2", ls="--", label="2024 3D box")
            ax.axhline(np.mean([r["recist"]["dsc"] for r in rows.values()]), color="C3", ls=":", label="RECIST line")
        ax.set_xticks(range(1, ROUNDS + 1), ["box"] + [f"click {i}" for i in range(1, ROUNDS)])
        ax.set_ylim(0, 1)
        ax.set_ylabel("DSC")
        ax.set_title(f"{setting}: DSC by round ({len(rows)} volumes)")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def cpu_tag() -> str:
    """'epyc', 'xeon', ... from the CPU's name: figures from different CPUs keep their own files."""
    words = describe().split(",")[0].split()
    return next((w.lower() for w in words if w.lower() in ("epyc", "xeon", "core", "ryzen")), "cpu")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=Path, default=ROOT / "out" / "case-mix")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench-prompts")
    tag = cpu_tag()
    ap.add_argument("--report", type=Path, default=ROOT / "docs" / f"bench-prompts-{tag}.json")
    ap.add_argument("--figure", type=Path, default=ROOT / "docs" / f"bench-prompts-{tag}.png")
    ap.add_argument("--only", nargs="*", help="volumes whose name holds one of these")
    ap.add_argument("--fresh", action="store_true", help="forget earlier results in --out")
    args = ap.parse_args(argv)
    if not (args.cases / "inputs").is_dir():
        subprocess.run([sys.executable, "-m", "tools.case_mix", "--out", str(args.cases)], check=True, cwd=ROOT)
    store = args.out / "results.json"
    if args.fresh:
        shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    results = json.loads(store.read_text()) if store.exists() else {}

    def save():
        store.write_text(json.dumps(results, indent=1))

    def say(text):
        print(text, flush=True)

    cpu = describe()
    say(cpu)
    chosen = settings()
    note = settings_note(chosen)
    if note:
        say(note)
    for name, extra in chosen.items():
        measure(args.cases, args.out, name, dict(os.environ, **extra), args.only, results, save, say)
    report = {"cpu": cpu, "settings": {k: v for k, v in chosen.items()}, "note": note,
              "summary": {name: summary(results, name) for name in chosen}, "cases": results}
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=1, default=float))
    draw(results, list(chosen), args.figure)
    for name in chosen:
        s = report["summary"][name]
        if not s:
            continue
        i = s["interactive"]
        say(f"[{name}] {s['cases']} volumes. 2024 box DSC {s['box']['dsc']:.4f} NSD {s['box']['nsd']:.4f}; "
            f"RECIST DSC {s['recist']['dsc']:.4f} NSD {s['recist']['nsd']:.4f} "
            f"(RECIST - box {s['recist']['dsc_minus_box_points']:+.1f} pts; without the MR slabs "
            f"{s['recist']['dsc_minus_box_points_without_mr_slabs'] or 0:+.1f}), seconds vs box max "
            f"{s['recist']['seconds_vs_box_max']:.2f}x, peak RSS max {s['recist']['peak_rss_mb_max']:.0f} MB")
        say(f"[{name}] interactive DSC by round {np.round(i['dsc_by_round'], 4).tolist()}, DSC AUC {i['dsc_auc']:.3f}, "
            f"NSD AUC {i['nsd_auc']:.3f}; +{i['gain_after_5_clicks_points']:.1f} pts after 5 clicks, worst case "
            f"{i['worst_case_change_points']:+.1f}; click round / box round (>= 50 slices) "
            f"{ {k: round(v, 2) for k, v in i['click_round_vs_box_round_where_box_encodes_50_plus'].items()} }")
    say(f"report {args.report}, figure {args.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
