"""A small challenge-style training tree from the public labelled data, plus held-out test cases.

``python -m training.make_public_tree --out DIR`` writes
  DIR/train/CT/*.npz          CT chest sub-volumes (axial chunks of 6 slices)
  DIR/train/Microscope/*.npz  nuclei: 2D quadrants, 3D sub-volumes
  DIR/test/inputs|gts/*.npz   held-out cases (one CT chunk, one nuclei quadrant, one nuclei chunk)
for the short QAT demonstration run; nothing held out is in ``train``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from qmedsam.atomic import save_npz
from qmedsam.label_boxes import boxes_from_labels, relabel_consecutive
from training.public_data import ct_chest, nuclei_2d, nuclei_3d, quadrant

CT_TEST_Z = (14, 20)          # axial slices [14, 20) of the CT volume are held out
NUCLEI_TEST_QUAD = 3
NUCLEI_TEST_Z = (24, 31)


def write_tree(out: Path) -> dict[str, int]:
    train, test = out / "train", out / "test"
    counts = {"train": 0, "test": 0}
    ct = ct_chest()
    sp = np.asarray(ct.spacing, np.float64)
    for z0 in range(0, ct.image.shape[0], 6):
        z1 = min(z0 + 6, ct.image.shape[0])
        img, lab = ct.image[z0:z1], relabel_consecutive(ct.labels[z0:z1])
        if (z0, z1) == CT_TEST_Z:
            name = f"3DBox_CT_test{z0:02d}.npz"
            save_npz(test / "inputs" / name, imgs=img, boxes=boxes_from_labels(lab), spacing=sp)
            save_npz(test / "gts" / name, gts=lab, spacing=sp)
            counts["test"] += 1
        else:
            save_npz(train / "CT" / f"3DBox_CT_z{z0:02d}.npz", imgs=img, gts=lab, spacing=sp)
            counts["train"] += 1
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
    n3 = nuclei_3d()
    sp3 = np.asarray(n3.spacing, np.float64)
    for z0 in range(0, n3.image.shape[0], 6):
        z1 = min(z0 + 6, n3.image.shape[0])
        img, lab = n3.image[z0:z1], relabel_consecutive(n3.labels[z0:z1])
        if z0 >= NUCLEI_TEST_Z[0]:
            name = f"3DBox_Microscope_test{z0:02d}.npz"
            save_npz(test / "inputs" / name, imgs=img, boxes=boxes_from_labels(lab), spacing=sp3)
            save_npz(test / "gts" / name, gts=lab, spacing=sp3)
            counts["test"] += 1
        else:
            save_npz(train / "Microscope" / f"3DBox_Microscope_z{z0:02d}.npz", imgs=img, gts=lab, spacing=sp3)
            counts["train"] += 1
    return counts


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("out/public-tree"))
    args = ap.parse_args(argv)
    print(write_tree(args.out), "cases in", args.out)


if __name__ == "__main__":
    main()
