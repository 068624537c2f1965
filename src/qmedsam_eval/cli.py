"""qmedsam-eval: score and time a submission the way the organisers do.

  metrics  --gt DIR --pred DIR --out DIR      DSC/NSD per case -> metrics.csv, labels.csv,
                                              summary.md (also printed), scores_<modality>.png
  time     (--image NAME:TAG | --local) --cases DIR --out DIR
                                              one case per run, whole-run wall time -> timing.csv
  time     --compare A.csv B.csv              per-case ratio table of two timing CSVs
  overlay  --gt DIR --pred DIR [--images DIR] --out DIR
                                              image | ground truth | prediction PNG per case
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _progress(desc: str):
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is an evaluation extra; without it, no bar
        return None
    return lambda items: tqdm(items, desc=desc, unit="case", file=sys.stderr)


def _metrics(args) -> int:
    from qmedsam_eval.score_report import bar_charts, summary_markdown
    from qmedsam_eval.scoring import score_folder, write_metrics_csv

    scores = score_folder(args.gt, args.pred, progress=_progress("scoring"))
    cases_csv, _ = write_metrics_csv(scores, args.out)
    table = summary_markdown(scores)
    (args.out / "summary.md").write_text(table + "\n")
    charts = bar_charts(scores, args.out)
    print(table)
    print(f"\n{cases_csv}; charts: {', '.join(p.name for p in charts)}")
    return 0


def _time(args) -> int:
    from qmedsam_eval.timing import compare_table, summary_table, time_cases, write_csv

    if args.compare:
        print(compare_table(*args.compare))
        return 0
    if not args.cases or not args.out or (args.image is None) == (not args.local):
        print("qmedsam-eval time: give --cases and --out, and exactly one of --image or --local",
              file=sys.stderr)
        return 2
    cases = sorted(p for p in args.cases.glob("*.npz") if p.is_file())
    if not cases:
        print(f"qmedsam-eval time: no *.npz cases in {args.cases}", file=sys.stderr)
        return 2
    runs = time_cases(cases, args.out / "work", image=None if args.local else args.image,
                      memory=args.memory, timeout=args.timeout, progress=_progress("timing"),
                      log=lambda m: print(m, file=sys.stderr))
    write_csv(runs, args.out / "timing.csv")
    table = summary_table(runs)
    (args.out / "timing.md").write_text(table + "\n")
    print(table)
    return 0 if all(r.output_ok for r in runs) else 1


def _overlay(args) -> int:
    from qmedsam_eval.compare_overlay import overlay_folder

    written = overlay_folder(args.images or args.gt, args.gt, args.pred, args.out, progress=_progress("overlay"))
    print(f"{len(written)} overlays in {args.out}")
    return 0


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="qmedsam-eval", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    m = sub.add_parser("metrics", help="DSC/NSD of predictions against ground truth")
    m.add_argument("--gt", type=Path, required=True, help="folder of <case>.npz with 'gts' (+ 'spacing' for 3D)")
    m.add_argument("--pred", type=Path, required=True, help="folder of <case>.npz with 'segs'")
    m.add_argument("--out", type=Path, required=True)
    m.set_defaults(run=_metrics)
    t = sub.add_parser("time", help="organiser-style timed runs, one case per run")
    t.add_argument("--image", help="Docker image NAME:TAG run as the organisers do")
    t.add_argument("--local", action="store_true", help="run this checkout's predict.sh instead of Docker")
    t.add_argument("--cases", type=Path)
    t.add_argument("--out", type=Path)
    t.add_argument("--memory", default="8G", help="memory cap (docker -m, or a cgroup with --local)")
    t.add_argument("--timeout", type=float, default=None, help="seconds before a run is killed")
    t.add_argument("--compare", nargs=2, type=Path, metavar=("A.csv", "B.csv"))
    t.set_defaults(run=_time)
    o = sub.add_parser("overlay", help="image | ground truth | prediction PNG per case")
    o.add_argument("--gt", type=Path, required=True)
    o.add_argument("--pred", type=Path, required=True)
    o.add_argument("--images", type=Path, help="inputs folder holding 'imgs' (default: the --gt folder)")
    o.add_argument("--out", type=Path, required=True)
    o.set_defaults(run=_overlay)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return args.run(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"qmedsam-eval: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
