"""``make bench-prompting``: how the prompting modes score on every labelled public case, int8
and FP32, side by side: 2D with ``--zoom off`` and ``auto``, 3D with ``--mode-3d fixed`` and
``propagate`` and ``guided``, and ``fixed`` with ``--interpolate-slices`` at a few thresholds.
Cases: the bundled samples (CT chest slice and volume, 2D and 3D nuclei), a 1920x2560
fluorescence image tiled from the 2D nuclei image with 241 labelled nuclei, the two volumes
resliced along another axis, and the 3D nuclei tiled to 124 slices with 408 labels.  Scores by
the organisers' rules (:mod:`qmedsam_eval.metrics`); seconds are in-process (models loaded, the
case read), per case.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.cpu import describe
from qmedsam.cases.read import Case, load_case
from benchmarks.setups import Setup
from qmedsam.image.zoom import MAX_CROPS
from qmedsam.segment.options import SegmentOptions as Options
from qmedsam_eval.label_boxes import boxes_from_labels, relabel_consecutive
from qmedsam_eval.metrics import case_scores

ROOT = Path(__file__).resolve().parents[1]
INTERPOLATE = (0.3, 0.4, 0.5)          # --interpolate-slices values measured (fixed mode)
MODES = {False: {"zoom off": Options(zoom_crops=0), "zoom auto": Options(zoom_crops=MAX_CROPS)},
         True: {"fixed": Options(mode_3d="fixed", interpolate=0), "propagate": Options(mode_3d="propagate"),
               "guided": Options(mode_3d="guided"),
               **{f"interp {t}": Options(mode_3d="fixed", interpolate=t) for t in INTERPOLATE}}}


def cases(samples: Path, tiled_3d: bool = False):
    """(case, ground truth, spacing) of every labelled public case; with ``tiled_3d`` also the 3D
    nuclei tiled to 124 slices and 408 labels (a speed case: minutes per mode)."""
    for path in sorted(samples.glob("*.npz")):
        g = np.load(samples.parent / "gts" / path.name)
        yield load_case(path), g["gts"], tuple(g["spacing"]) if "spacing" in g.files else None
    from tools.public_data import tiled_nuclei

    t = tiled_nuclei(1920, 2560, 241, seed=0)
    yield Case("2DBox_Microscope_tiled1920x2560.npz", t.image, boxes_from_labels(t.labels)), t.labels, None
    yield from resliced(samples)
    if tiled_3d:
        yield tiled_3d_case()


def tiled_3d_case():
    """(case, ground truth, spacing) of the 3D nuclei tiled to 124 slices with 408 labelled nuclei
    (:func:`tools.public_data.tiled_nuclei_3d`): many small boxes over many slices."""
    from tools.public_data import tiled_nuclei_3d

    t = tiled_nuclei_3d()
    return (Case(f"3DBox_Microscope_tiled{t.image.shape[0]}.npz", t.image, boxes_from_labels(t.labels)),
            t.labels, t.spacing)


def resliced(samples: Path):
    """More 3D cases from the same public volumes: the CT chest sliced coronally and the 3D nuclei
    sliced along x, so that structures start, grow and end along another axis."""
    for name, axes, tag in (("3DBox_CT_0001.npz", (1, 0, 2), "3DBox_CT_coronal.npz"),
                            ("3DBox_Microscope_0004.npz", (2, 1, 0), "3DBox_Microscope_xslices.npz")):
        with np.load(samples / name) as c, np.load(samples.parent / "gts" / name) as g:
            vol = np.ascontiguousarray(c["imgs"].transpose(axes))
            gts = relabel_consecutive(np.ascontiguousarray(g["gts"].transpose(axes)))
            spacing = tuple(np.asarray(g["spacing"])[list(axes)])
        yield Case(tag, vol, boxes_from_labels(gts)), gts, spacing


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--samples", type=Path, default=ROOT / "samples" / "inputs")
    ap.add_argument("--only", choices=("2d", "3d"), help="run only the 2D (zoom) or only the 3D cases")
    args = ap.parse_args(argv)
    print(f"CPU: {describe()}")
    engines = {"int8": Setup.open(args.models), "fp32": Setup.open(args.models / "fp32", "f32")}
    rows = []
    for case, gt, spacing in cases(args.samples, tiled_3d=True):
        if args.only and case.is_3d != (args.only == "3d"):
            continue
        for mode, opts in MODES[case.is_3d].items():
            for prec, engine in engines.items():
                t = time.perf_counter()
                seg, stats = engine.segment(case, opts)
                seconds = time.perf_counter() - t
                dsc, nsd = case_scores(gt, seg, spacing)
                rows.append((case.name.split("_")[1], case.name, len(case.boxes), mode, prec, dsc, nsd, seconds,
                             stats.passes))
                print(f"  {case.name:38s} {mode:10s} {prec:5s} DSC {dsc:.4f} NSD {nsd:.4f} {seconds:6.2f} s "
                      f"({stats.passes} encoder passes)", flush=True)
    print("\n| modality | case | boxes | mode | int8 DSC | int8 NSD | int8 s | FP32 DSC | FP32 NSD | FP32 s |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|")
    table = {}
    for modality, name, boxes, mode, prec, dsc, nsd, seconds, _ in rows:
        table.setdefault((modality, name, boxes, mode), {})[prec] = (dsc, nsd, seconds)
    for (modality, name, boxes, mode), r in table.items():
        print(f"| {modality} | {name} | {boxes} | {mode} | " + " | ".join(
            f"{r[p][0]:.4f} | {r[p][1]:.4f} | {r[p][2]:.2f}" for p in ("int8", "fp32")) + " |")
    print("\nmean per modality and mode (int8 DSC / NSD / s):")
    for modality in sorted({k[0] for k in table}):
        for mode in {k[3] for k in table if k[0] == modality}:
            picked = [r["int8"] for k, r in table.items() if k[0] == modality and k[3] == mode]
            means = np.mean(picked, axis=0)
            print(f"  {modality:12s} {mode:10s} {means[0]:.4f} / {means[1]:.4f} / {means[2]:.2f} s  ({len(picked)} cases)")
    print("\n3D: mean over the volumes per mode (int8 DSC / NSD / encoder passes; FP32 DSC / NSD):")
    passes = {(r[1], r[3]): r[8] for r in rows if r[4] == "int8"}
    for mode in MODES[True]:
        picked = [(k[1], r) for k, r in table.items() if k[3] == mode]
        if picked:
            i8 = np.mean([r["int8"][:2] for _, r in picked], axis=0)
            f32 = np.mean([r["fp32"][:2] for _, r in picked], axis=0)
            print(f"  {mode:12s} {i8[0]:.4f} / {i8[1]:.4f} / {sum(passes[(n, mode)] for n, _ in picked):5d}; "
                  f"{f32[0]:.4f} / {f32[1]:.4f}")


if __name__ == "__main__":
    main()
