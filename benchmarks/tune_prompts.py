"""``make tune-prompts``: the measurements behind the RECIST and click rules' constants, in one
process (models loaded once, the product's float encoder), on the labelled volumes of the case mix.

For RECIST: mean DSC/NSD of each stop rule and reach against the 2024 3D box of the same objects.
For clicks: mean DSC by round with each background-click depth threshold.  Figures land in
docs/decisions/prompts.md by hand; `make bench-prompts` is the organiser-style run of the result.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.cpu import describe
from benchmarks.prompt_cases import next_click, object_array, recist_from_labels, round1_boxes
from benchmarks.setups import Setup
from qmedsam.cases.read import load_case, successor_case
from qmedsam.model.folder import default_models
from qmedsam.model.spec import ENCODER_FLOAT
from qmedsam.segment import clicks as click_rules
from qmedsam.segment import from_slice
from qmedsam_eval.metrics import case_scores


class Memo:
    """Every slice encoded once over the whole tuning run (the rules only change the decoding)."""

    def __init__(self):
        self.seen = {}

    def get(self, image):
        return self.seen.get(hash(image.tobytes()))

    def put(self, image, emb):
        self.seen[hash(image.tobytes())] = emb


MEMO = Memo()


def run(setup, case):
    from qmedsam.segment.case_run import segment_case

    return segment_case(case, setup.model, setup.plan, cache=MEMO)[0]


def volumes(root: Path):
    """(name, image, gt, spacing) of each labelled volume of a case-mix folder."""
    for path in sorted((root / "inputs").glob("3D*.npz")):
        c = np.load(path)
        g = np.load(root / "gts" / path.name)
        spacing = tuple(float(v) for v in c["spacing"]) if "spacing" in c.files else None
        yield path.stem, c["imgs"], g["gts"], spacing, path


def recist_case(name, image, gt, spacing):
    return successor_case(f"{name}_recist.npz", {"imgs": image, "recist": recist_from_labels(gt),
                                                 "spacing": spacing}, "recist")


def interactive_rounds(setup, name, image, gt, spacing, rounds: int = 6) -> list[float]:
    members = {"imgs": image, "spacing": spacing, "boxes": object_array(round1_boxes(gt))}
    classes = int(gt.max())
    clicks = [{"fg": [], "bg": []} for _ in range(classes)]
    order = [[] for _ in range(classes)]
    dsc = []
    pred = None
    for r in range(rounds):
        if r:
            for k in range(classes):
                c = next_click(gt, pred, k + 1)
                if c is not None:
                    clicks[k][c[0]].append(c[1])
                    order[k].append(c[0])
            members.update(clicks=clicks, clicks_order=order, prev_pred=pred)
        case = successor_case(f"{name}_inter.npz", members, "interactive")
        pred = run(setup, case)
        dsc.append(case_scores(gt, pred, spacing)[0])
    return dsc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=Path, default=Path("out/case-mix"))
    ap.add_argument("--out", type=Path, default=Path("out/tune-prompts.json"))
    ap.add_argument("--part", choices=("recist", "clicks", "all"), default="all")
    args = ap.parse_args(argv)
    print(describe(), flush=True)
    setup = Setup.open(default_models(), encoder=ENCODER_FLOAT.name)
    data = list(volumes(args.cases))
    result = {}
    if args.part in ("recist", "all"):
        box = {}
        for name, image, gt, spacing, path in data:
            box[name] = case_scores(gt, run(setup, load_case(path)), spacing)
        result["box"] = {k: list(v) for k, v in box.items()}
        print(f"2024 3D box: mean DSC {np.mean([v[0] for v in box.values()]):.4f} "
              f"NSD {np.mean([v[1] for v in box.values()]):.4f}", flush=True)
        from qmedsam.cases import recist as prompts

        def recist_run(tag, **knobs):
            t0, scores = time.perf_counter(), {}
            for name, image, gt, spacing, _ in data:
                case = recist_case(name, image, gt, spacing)
                case = replace(case, boxes=np.asarray([prompts.lesion_reach(l, case.spacing, image.shape,
                                                                            knobs.get("reach"))
                                                       for l in case.prompts], np.int64))
                scores[name] = case_scores(gt, run(setup, case), spacing)
            result[tag] = {k: list(v) for k, v in scores.items()}
            gap = {k: round(v[0] - box[k][0], 3) for k, v in scores.items()}
            print(f"RECIST {tag}: mean DSC {np.mean([v[0] for v in scores.values()]):.4f} "
                  f"NSD {np.mean([v[1] for v in scores.values()]):.4f} ({time.perf_counter() - t0:.0f} s); "
                  f"DSC - box per case {gap}", flush=True)

        base = (prompts.RECIST_SIDE, prompts.RECIST_MINOR, from_slice.DEFAULT_RULE)
        for side, minor in ((1.0, 1.0), (1.2, 1.0), (1.0, 0.7), (0.8, 1.0)):
            prompts.RECIST_SIDE, prompts.RECIST_MINOR = side, minor
            recist_run(f"side {side} minor {minor} reach 0.5", reach=0.5)
        prompts.RECIST_SIDE, prompts.RECIST_MINOR, _ = base
        for reach in (0.5, 1.0):
            for grow in (float("inf"), 1.2, 1.0):
                for overlap in (0.0, 0.4):
                    from_slice.DEFAULT_RULE = from_slice.StopRule(0.5, 0.1, grow, overlap)
                    recist_run(f"reach {reach} grow {grow} overlap {overlap}", reach=reach)
        from_slice.DEFAULT_RULE = base[2]
    if args.part in ("clicks", "all"):
        for deep in (0.3, 0.5, 0.7, 2.0):
            click_rules.DEEP = deep
            per = {name: interactive_rounds(setup, name, image, gt, spacing) for name, image, gt, spacing, _ in data}
            result[f"clicks deep {deep}"] = per
            mean = np.mean(list(per.values()), axis=0)
            worst = min(v[-1] - v[0] for v in per.values())
            print(f"clicks DEEP {deep}: mean DSC by round {np.round(mean, 4).tolist()}; worst last-first {worst:+.4f}",
                  flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
