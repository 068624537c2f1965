"""DSC/NSD of the QAT int8 models vs the calibration-only int8 models vs FP32 on held-out cases.

``python -m training.qat.compare --test DIR --qat MODELS_DIR [--ptq models] [--fp32 models/fp32] --out DIR``
runs the runtime predictor with each model set on ``DIR/inputs`` and scores
against ``DIR/gts`` with the evaluation metrics; prints a Markdown table.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

from qmedsam.model.spec import ENCODER
from qmedsam_eval.score_report import by_modality
from qmedsam_eval.scoring import score_folder


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--test", type=Path, required=True, help="folder with inputs/ and gts/")
    ap.add_argument("--qat", type=Path, required=True, help="int8 models exported from the QAT checkpoint")
    ap.add_argument("--ptq", type=Path, default=Path("models"), help="calibration-only int8 models")
    ap.add_argument("--fp32", type=Path, default=Path("models/fp32"), help="float models")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    # int8 runs force the int8 encoder: --precision auto would run 2D images and the cases its
    # guard flags with the float encoder, which is not what is compared here
    runs = [("FP32", args.fp32, "f32", "auto"), ("int8 calibration-only", args.ptq, "auto", "int8"),
            ("int8 QAT", args.qat, "auto", "int8")]
    rows = []
    for name, models, float_ops, precision in runs:
        if not (models / ENCODER.files[0]).is_file():
            print(f"compare: no models in {models} (make export / export-fp32)", file=sys.stderr)
            return 2
        pred = args.out / name.replace(" ", "-")
        # the predictor as the organisers run it: its own process, its command line
        subprocess.run([sys.executable, "-m", "qmedsam.predict", "-i", str(args.test / "inputs"), "-o", str(pred),
                        "--models", str(models), "--cache", "none", "--float-ops", float_ops,
                        "--precision", precision], check=True)
        scores = score_folder(args.test / "gts", pred)
        groups = by_modality(scores)
        row = {m: (np.mean([s.dsc for s in g]), np.mean([s.nsd for s in g])) for m, g in groups.items()}
        row["mean"] = (np.mean([v[0] for v in row.values()]), np.mean([v[1] for v in row.values()]))
        rows.append((name, row))
    mods = list(rows[0][1])
    lines = ["| models | " + " | ".join(f"{m} DSC | {m} NSD" for m in mods) + " |",
             "|---|" + "---:|---:|" * len(mods)]
    for name, row in rows:
        lines.append(f"| {name} | " + " | ".join(f"{100 * row[m][0]:.2f}% | {100 * row[m][1]:.2f}%" for m in mods) + " |")
    table = "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compare.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
