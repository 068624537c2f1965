"""Write the bundled sample cases (``samples/inputs``) and their labels (``samples/gts``).

Run as ``python -m tools.make_samples``; the outputs are committed so the
runtime demo needs neither torch nor a download.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from qmedsam_eval.label_boxes import boxes_from_labels, relabel_consecutive
from tools.public_data import ct_chest, nuclei_2d, nuclei_3d

ROOT = Path(__file__).resolve().parents[1] / "samples"


def _write(folder: Path, name: str, **arrays) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / name, **arrays)


def write_samples(root: Path = ROOT) -> list[str]:
    cases = []
    ct = ct_chest()
    labels = relabel_consecutive(ct.labels)
    spacing = np.asarray(ct.spacing, dtype=np.float64)
    name = "3DBox_CT_0001.npz"
    _write(root / "inputs", name, imgs=ct.image, boxes=boxes_from_labels(labels), spacing=spacing)
    _write(root / "gts", name, gts=labels, spacing=spacing)
    cases.append(name)

    z = ct.image.shape[0] // 2
    sl = relabel_consecutive(ct.labels[z])
    name = "2DBox_CT_0002.npz"
    rgb = np.repeat(ct.image[z][:, :, None], 3, axis=2)
    _write(root / "inputs", name, imgs=rgb, boxes=boxes_from_labels(sl))
    _write(root / "gts", name, gts=sl)
    cases.append(name)

    n2 = nuclei_2d()
    labels = relabel_consecutive(n2.labels)
    name = "2DBox_Microscope_0003.npz"
    _write(root / "inputs", name, imgs=n2.image, boxes=boxes_from_labels(labels))
    _write(root / "gts", name, gts=labels)
    cases.append(name)

    n3 = nuclei_3d()
    labels = relabel_consecutive(n3.labels)
    spacing = np.asarray(n3.spacing, dtype=np.float64)
    name = "3DBox_Microscope_0004.npz"
    _write(root / "inputs", name, imgs=n3.image, boxes=boxes_from_labels(labels), spacing=spacing)
    _write(root / "gts", name, gts=labels, spacing=spacing)
    cases.append(name)
    return cases


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT)
    args = ap.parse_args(argv)
    for name in write_samples(args.out):
        print(args.out / "inputs" / name)


if __name__ == "__main__":
    main()
