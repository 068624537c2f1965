"""A small challenge-style training tree from the public labelled data, plus held-out test cases.

``python -m tools.make_public_tree --out DIR`` writes
  DIR/train/CT/*.npz          CT chest sub-volumes (axial chunks of 6 slices)
  DIR/train/Microscope/*.npz  nuclei: 2D quadrants, 3D sub-volumes
  DIR/test/inputs|gts/*.npz   held-out cases (one CT chunk, one nuclei quadrant, one nuclei chunk)
for the short QAT demonstration run; nothing held out is in ``train``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from qmedsam.cases.atomic import save_npz
from qmedsam_eval.label_boxes import boxes_from_labels, relabel_consecutive
from tools.public_data import ct_chest, nuclei_2d, nuclei_3d, quadrant

CT_TEST_Z = (18, 24)          # the chunk of axial slices 18-23 of the CT volume is held out
NUCLEI_TEST_QUAD = 3
NUCLEI_TEST_Z = (24, 30)      # the chunk of nuclei slices 24-29


def _chunks(vol, modality: str, test_from: tuple[int, int], train: Path, test: Path, counts: dict) -> None:
    """Cut a labelled volume into 6-slice cases; the chunk starting in ``test_from`` is held out."""
    sp = np.asarray(vol.spacing, np.float64)
    for z0 in range(0, vol.image.shape[0], 6):
        img, lab = vol.image[z0:z0 + 6], relabel_consecutive(vol.labels[z0:z0 + 6])
        if test_from[0] <= z0 < test_from[1]:
            name = f"3DBox_{modality}_test{z0:02d}.npz"
            save_npz(test / "inputs" / name, imgs=img, boxes=boxes_from_labels(lab), spacing=sp)
            save_npz(test / "gts" / name, gts=lab, spacing=sp)
            counts["test"] += 1
        else:
            save_npz(train / modality / f"3DBox_{modality}_z{z0:02d}.npz", imgs=img, gts=lab, spacing=sp)
            counts["train"] += 1


def write_tree(out: Path) -> dict[str, int]:
    train, test = out / "train", out / "test"
    counts = {"train": 0, "test": 0}
    _chunks(ct_chest(), "CT", CT_TEST_Z, train, test, counts)
    _chunks(nuclei_3d(), "Microscope", NUCLEI_TEST_Z, train, test, counts)
    n2 = nuclei_2d()
    for q in range(4):
        img, lab = quadrant(n2.image, q), relabel_consecutive(quadrant(n2.labels, q))
        if q == NUCLEI_TEST_QUAD:
            name = f"2DBox_Microscope_test{q}.npz"
            save_npz(test / "inputs" / name, imgs=img, boxes=boxes_from_labels(lab))
            save_npz(test / "gts" / name, gts=lab)
            counts["test"] += 1
        else:
            save_npz(train / "Microscope" / f"2DBox_Microscope_q{q}.npz", imgs=img, gts=lab)
            counts["train"] += 1
    return counts


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("out/public-tree"))
    args = ap.parse_args(argv)
    print(write_tree(args.out), "cases in", args.out)


if __name__ == "__main__":
    main()
