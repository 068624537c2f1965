"""``make bench-int8 [CANDIDATE=dir]``: how close int8 is to float, against the ground truth and
against float itself, in every CPU setting, side by side in one run.

* every labelled public case (the bundled samples, the tiled 241-nuclei image, the resliced
  CT and 3D nuclei volumes; :func:`benchmarks.bench_prompting.cases`), default options: DSC and
  NSD by the organisers' rules, for FP32, the committed int8 models and (``--candidate``) another
  int8 models folder, each with the int8 encoder ``--precision auto`` picks in that setting (and
  the other int8 encoder beside it), without and with the guard: where auto runs the 7-bit
  encoder, the 8-bit one without and with the guard (``8-bit``, ``8-bit+guard``); where it runs
  the 8-bit one, the 7-bit one with the guard (``7-bit+guard``), for the committed folder only
  (a candidate's rows are the encoder auto picks from it); each row's DSC spread across
  the settings says what that encoder does to stability;
* the held-out unlabelled modalities (MR, ultrasound, photographs, microscopy, CT): mask Dice of
  each int8 folder against FP32, beside FP32's own agreement under +-half a grey level of dither
  (:func:`benchmarks.bench_model.held_out_agreement`);
* each setting in a fresh process: this CPU as it runs by default, this CPU with the int8
  models' float leftovers in f32, and organiser-like (AVX-512 without VNNI, f32 leftovers;
  :mod:`benchmarks.cpu`) where the cap changes something.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.cpu import SETTINGS, describe, settings
from benchmarks.int8_figure import draw
from benchmarks.setups import Setup
from qmedsam.model.folder import has_graph
from qmedsam.model.spec import ENCODER, ENCODER_FLOAT, ENCODER_W7
from qmedsam_eval.metrics import case_scores

ROOT = Path(__file__).resolve().parents[1]
# setting -> (environment, float ops of the int8 models)
GUARDED = "+guard"
FIGURE = "int8-accuracy.png"
RUNS = {"default": ({}, "auto"), "f32 leftovers": ({}, "f32"),
        "organiser-like": (SETTINGS["organiser-like"], "f32")}


def measure(folders: dict[str, Path], float_ops: str, samples: Path) -> dict:
    """Every labelled case and the held-out images with FP32, each int8 folder without the guard,
    and each with it (``+guard``: what ``--precision auto`` runs; on the held-out 2D images that is
    the float encoder)."""
    from benchmarks.bench_model import held_out_agreement
    from benchmarks.bench_prompting import cases

    engines = {"fp32": Setup.open(folders["int8"] / "fp32", "f32")}
    for k, p in folders.items():
        encoder = auto_int8_encoder(p)
        engines[k] = Setup.open(p, float_ops, encoder)
        engines[k + GUARDED] = Setup.open(p, float_ops, encoder, guard=True)
        if k != "int8":                             # a candidate's other encoder is measured only
            continue                                # when it is not the committed folder's
        if encoder != ENCODER.name:                 # the 8-bit encoder beside the 7-bit one auto runs here
            engines[k + " 8-bit"] = Setup.open(p, float_ops, ENCODER.name)
            other = " 8-bit", ENCODER.name
        elif has_graph(p, ENCODER_W7.name):
            other = " 7-bit", ENCODER_W7.name
        else:
            continue
        engines[k + other[0] + GUARDED] = Setup.open(p, float_ops, other[1], guard=True)
    labelled = {}
    for case, gt, spacing in cases(samples):
        labelled[case.name] = {}
        for k, e in engines.items():
            seg, stats = e.segment(case)
            labelled[case.name][k] = (*case_scores(gt, seg, spacing), stats.verdict.encoder if stats.verdict else "")
        print(f"  {case.name}: " + ", ".join(f"{k} {d:.4f}/{n:.4f} {v}" for k, (d, n, v) in labelled[case.name].items()),
              file=sys.stderr, flush=True)
    for k in folders:
        engines[k + GUARDED] = engines[k + GUARDED].running(ENCODER_FLOAT.name)   # the guard's choice for a 2D image
    return {"labelled": labelled,            # the other encoder's guarded row would repeat FP32 on 2D images
            "held_out": held_out_agreement({k: e for k, e in engines.items()
                                            if not k.endswith(GUARDED) or k[:-len(GUARDED)] in folders})}


def auto_int8_encoder(folder: Path) -> str:
    """The int8 encoder ``--precision auto`` runs on this CPU (in this setting) from ``folder``."""
    from qmedsam.precision.setting import choose_encoder

    name = choose_encoder("auto")[0]
    return name if name != ENCODER_FLOAT.name and has_graph(folder, name) else ENCODER.name


def _run(setting: str, args) -> dict:
    env = dict(os.environ, **RUNS[setting][0])
    cmd = [sys.executable, "-m", "benchmarks.bench_int8_accuracy", "--measure", setting,
           "--samples", str(args.samples), "--models", str(args.models)]
    if args.candidate:
        cmd += ["--candidate", str(args.candidate)]
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, encoding="utf-8", errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"bench-int8: the {setting} run failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _ran(score) -> str:
    """' (float)' where the guard ran the case with the float encoder."""
    return " (float)" if len(score) > 2 and score[2] == ENCODER_FLOAT.name else ""


def _rows(results: dict) -> list[str]:
    """Every row name of every setting, in the order first seen (a setting may lack one: the
    8-bit rows exist only where auto runs the 7-bit encoder)."""
    names = {}
    for r in results.values():
        for row in r["labelled"].values():
            names.update(dict.fromkeys(row))
    return list(names)


def _cell(row: dict, k: str) -> str:
    return f"{row[k][0]:.4f} | {row[k][1]:.4f}{_ran(row[k])}" if k in row else "- | -"


def report(results: dict) -> None:
    names = _rows(results)
    for setting, r in results.items():
        print(f"\n### {setting} (int8 float leftovers: {RUNS[setting][1]})\n")
        print("| case | " + " | ".join(f"{k} DSC | {k} NSD" for k in names) + " |")
        print("|---|" + "---:|---:|" * len(names))
        for case, row in r["labelled"].items():
            print(f"| {case} | " + " | ".join(_cell(row, k) for k in names) + " |")
        here = [k for k in names if k in next(iter(r["labelled"].values()))]
        means = {k: np.mean([row[k][:2] for row in r["labelled"].values()], axis=0) for k in here}
        print("| **mean** | " + " | ".join(f"**{means[k][0]:.4f}** | **{means[k][1]:.4f}**" if k in means
                                          else "- | -" for k in names) + " |")
        for k in here[1:]:
            worst = min(r["labelled"].items(), key=lambda item: item[1][k][0] - item[1]["fp32"][0])
            print(f"- {k}: mean DSC {100 * (means[k][0] - means['fp32'][0]):+.2f} points vs fp32, NSD "
                  f"{100 * (means[k][1] - means['fp32'][1]):+.2f}; worst case {worst[0]} "
                  f"{100 * (worst[1][k][0] - worst[1]['fp32'][0]):+.2f} DSC points")
        held = r["held_out"]
        cols = [c for c in next(iter(held.values())) if c not in ("images", "boxes")]
        print("\nheld-out mask Dice vs FP32 (last column: FP32 against itself under dither):\n")
        print("| modality | images | boxes | " + " | ".join(cols) + " |")
        print("|---|---:|---:|" + "---:|" * len(cols))
        for m, row in held.items():
            print(f"| {m} | {row['images']} | {row['boxes']} | " + " | ".join(f"{row[c]:.4f}" for c in cols) + " |")
    if len(results) > 1:
        print("\nper case, DSC spread of each int8 folder across the settings (max - min, points):")
        for k in names[1:]:
            where = [s for s, r in results.items() if k in next(iter(r["labelled"].values()))]
            if len(where) < 2:
                continue
            dsc = {case: [results[s]["labelled"][case][k][0] for s in where]
                   for case in next(iter(results.values()))["labelled"]}
            spread = {case: 100 * (max(v) - min(v)) for case, v in dsc.items()}
            worst = max(spread, key=spread.get)
            among = "" if len(where) == len(results) else f" (in {', '.join(where)})"
            print(f"  {k}: largest {spread[worst]:.2f} ({worst}); mean {np.mean(list(spread.values())):.2f}{among}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--candidate", type=Path, help="another int8 models folder, measured beside the committed one")
    ap.add_argument("--samples", type=Path, default=ROOT / "samples" / "inputs")
    ap.add_argument("--settings", default=",".join(RUNS),
                    help="comma-separated CPU settings to measure (default: all: %(default)s)")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench-int8",
                    help="where results.json and int8-accuracy.png go (default: %(default)s)")
    ap.add_argument("--report", type=Path, metavar="RESULTS_JSON",
                    help="print the report and draw the figure of an earlier run's results.json")
    ap.add_argument("--measure", choices=tuple(RUNS), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.report:
        saved = json.loads(args.report.read_text())
        print(f"CPU: {saved['cpu']}")
        report(saved["results"])
        print(f"figure: {draw(saved['results'], args.out / FIGURE, saved['cpu'])}")
        return
    folders = {"int8": args.models, **({"candidate": args.candidate} if args.candidate else {})}
    if args.measure:
        print(json.dumps(measure(folders, RUNS[args.measure][1], args.samples)))
        return
    cpu = describe()
    print(f"CPU: {cpu}")
    wanted = [w.strip() for w in args.settings.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in RUNS]
    if unknown:
        ap.error(f"unknown setting(s) {', '.join(unknown)} (have: {', '.join(RUNS)})")
    chosen = [s for s in RUNS if s in wanted and (s != "organiser-like" or "organiser-like" in settings())]
    results = {}
    for setting in chosen:
        print(f"measuring: {setting}", file=sys.stderr, flush=True)
        results[setting] = _run(setting, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"cpu": cpu, "results": results}, indent=1) + "\n")
    report(results)
    print(f"figure: {draw(results, args.out / FIGURE, cpu)} (results: {args.out / 'results.json'})")


if __name__ == "__main__":
    main()
