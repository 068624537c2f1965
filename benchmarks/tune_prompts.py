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
    ap.add_argument("--match", default="", help="only the RECIST variants whose label holds this")
    ap.add_argument("--box-from", type=Path, help="the 2024 box scores of an earlier run's JSON (not measured again)")
    args = ap.parse_args(argv)
    print(describe(), flush=True)
    setup = Setup.open(default_models(), encoder=ENCODER_FLOAT.name)
    data = list(volumes(args.cases))
    result = {}
    if args.part in ("recist", "all"):
        box = {}
        if args.box_from:
            box = {k: tuple(v) for k, v in json.loads(args.box_from.read_text())["box"].items()}
        for name, image, gt, spacing, path in data:
            if name not in box:
                box[name] = case_scores(gt, run(setup, load_case(path)), spacing)
        result["box"] = {k: list(v) for k, v in box.items()}
        print(f"2024 3D box: mean DSC {np.mean([v[0] for v in box.values()]):.4f} "
              f"NSD {np.mean([v[1] for v in box.values()]):.4f}", flush=True)
        from qmedsam.cases import recist as prompts

        def recist_run(tag, **knobs):
            if args.match and args.match not in tag:
                return
            t0, scores = time.perf_counter(), {}
            for name, image, gt, spacing, _ in data:
                case = recist_case(name, image, gt, spacing)
                case = replace(case, boxes=np.asarray([prompts.lesion_reach(l, case.spacing, image.shape,
                                                                            knobs.get("reach"))
                                                       for l in case.prompts], np.int64))
                scores[name] = case_scores(gt, run(setup, case), spacing)
            result[tag] = {k: list(v) for k, v in scores.items()}
            gap = {k: round(v[0] - box[k][0], 3) for k, v in scores.items()}
            ends = [k for k in scores if "_MR_" not in k]     # the MR slabs are a head cut to slices
            gap_ends = np.mean([scores[k][0] - box[k][0] for k in ends])
            print(f"RECIST {tag}: mean DSC {np.mean([v[0] for v in scores.values()]):.4f} "
                  f"NSD {np.mean([v[1] for v in scores.values()]):.4f}; without the MR slabs DSC - box {gap_ends:+.4f} "
                  f"({time.perf_counter() - t0:.0f} s); "
                  f"DSC - box per case {gap}", flush=True)

        base = (prompts.RECIST_SIDE, prompts.RECIST_MINOR, from_slice.DEFAULT_RULE)
        for side, minor in ((1.0, 1.0), (1.2, 1.0), (1.0, 0.7), (0.8, 1.0)):
            prompts.RECIST_SIDE, prompts.RECIST_MINOR = side, minor
            recist_run(f"side {side} minor {minor} reach 0.5", reach=0.5)
        prompts.RECIST_SIDE, prompts.RECIST_MINOR, _ = base
        inf = float("inf")
        grid = [(reach, grow, overlap, inf) for reach in (0.5, 1.0) for grow in (inf, 1.2, 1.0) for overlap in (0.0, 0.4)]
        grid += [(0.5, grow, 0.4, inf) for grow in (1.1, 1.4)]
        grid += [(reach, 1.2, 0.4, contrast) for reach in (0.5, 1.0, 2.0) for contrast in (1.0, 1.5, 2.0, 3.0)]
        grid += [(reach, 1.2, 0.4, contrast, margin) for reach in (0.5, 1.0) for contrast in (0.5, 0.75, 1.0)
                 for margin in (3.0, 1.0, 0.0)]
        grid += [(0.5, 1.2, 0.4, 0.75, 3.0, iou, area, drift) for iou in (0.3, 0.5, 0.7) for area in (0.05, 0.1, 0.2)
                 for drift in (False, True) if (iou, area) == (0.5, 0.1) or not drift]
        grid += [(reach, 1.2, 0.4, contrast, 3.0, 0.5, 0.1, True) for reach in (0.75, 1.0) for contrast in (0.75, 1.0)]
        for reach, grow, overlap, contrast, *more in grid:
            margin, iou, area, drift = (more + [3.0, 0.5, 0.1, False][len(more):]) if more else (3.0, 0.5, 0.1, False)
            from_slice.FOLLOW_MARGIN = margin
            from_slice.DEFAULT_RULE = from_slice.StopRule(iou, area, grow, overlap, contrast, drift)
            recist_run(f"reach {reach} grow {grow} overlap {overlap} contrast {contrast}"
                       + (f" margin {margin}" if more else "") + (f" iou {iou} area {area} drift {drift}" if len(more) > 1
                                                                   else ""), reach=reach)
        from_slice.DEFAULT_RULE = base[2]
    if args.part in ("clicks", "all"):
        for deep, in_plane, redo, ball in ((0.5, True, True, 1.0), (0.5, True, False, 1.0), (0.5, True, False, 0.5),
                                           (0.5, True, True, 0.5), (0.5, False, False, 1.0), (0.5, True, True, 1.5),
                                           (0.5, True, True, 2.0)):
            tag = f"in-plane {in_plane} redo {redo} ball {ball}"
            if args.match and args.match not in tag:
                continue
            click_rules.DEEP, click_rules.IN_PLANE, click_rules.REDO, click_rules.BALL = deep, in_plane, redo, ball
            t0 = time.perf_counter()
            per = {name: interactive_rounds(setup, name, image, gt, spacing) for name, image, gt, spacing, _ in data}
            tag = f"in-plane {in_plane} redo {redo} ball {ball}"
            result[f"clicks {tag}"] = per
            mean = np.mean(list(per.values()), axis=0)
            worst = min(v[-1] - v[0] for v in per.values())
            print(f"clicks {tag}: mean DSC by round {np.round(mean, 4).tolist()}; "
                  f"worst last-first {worst:+.4f} ({time.perf_counter() - t0:.0f} s); last-first per case "
                  f"{ {k: round(v[-1] - v[0], 3) for k, v in per.items()} }", flush=True)
        click_rules.DEEP, click_rules.IN_PLANE, click_rules.REDO, click_rules.BALL = 0.5, True, True, 1.0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
