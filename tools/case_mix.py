"""A folder of labelled cases shaped like a real challenge set, from the public data only.

Real sets are mostly small: 3D lesions whose box spans a handful of slices and 2D images with one
box; a few are long volumes or many-box images.  ``python -m tools.case_mix --out DIR`` writes
``DIR/inputs`` and ``DIR/gts`` with:

* short 3D: one box around one structure over its own z range (3-12 slices): CT chest structures
  (slicerio), single nuclei (stardist 3D) and MR slabs of the head (nibabel's EPI series, labelled by
  an Otsu threshold: a pseudo ground truth, the same for every setting compared);
* 1-box 2D images of several sizes: a CT slice, a nucleus, photographs (scikit-image's camera,
  coffee, and coffee enlarged to 12 MP), their structure labelled by an Otsu component;
* many-box 2D: the 512x512 nuclei image (125 boxes) and a 1920x2560 tiling of it (241 boxes);
* long and many-label volumes: the CT chest whole (34 slices, 7 structures), resliced coronally
  (128 slices), and the 3D nuclei (31 slices, 51 nuclei).

Everything is deterministic: the same folder on every machine.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from qmedsam.cases.atomic import save_npz
from qmedsam_eval.label_boxes import boxes_from_labels, relabel_consecutive
from tools.public_data import Labelled, ct_chest, nuclei_2d, nuclei_3d, stretch_to_uint8, tiled_nuclei

SHORT_Z = (3, 12)          # slices a short 3D case's box spans


def _components_3d(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.label(mask)[0]


def short_structures(labels: np.ndarray, n: int, min_voxels: int = 30, z_range=SHORT_Z,
                     min_fill: float = 0.1) -> list[np.ndarray]:
    """Up to ``n`` single connected structures (boolean masks) of a label map spanning ``z_range``
    slices and filling at least ``min_fill`` of their box (a box prompt suits them), the largest
    first, at most three per label value so that every structure kind shows."""
    found = []
    for value in (v for v in np.unique(labels) if v):
        comps = _components_3d(labels == value)
        sizes = np.bincount(comps.ravel())
        picked = 0
        for c in np.argsort(-sizes):
            if c == 0 or sizes[c] < min_voxels or picked == 3:
                continue
            comp = comps == c
            zs = np.flatnonzero(comp.any(axis=(1, 2)))
            ys, xs = np.flatnonzero(comp.any(axis=(0, 2))), np.flatnonzero(comp.any(axis=(0, 1)))
            fill = sizes[c] / (len(zs) * (ys[-1] - ys[0] + 1) * (xs[-1] - xs[0] + 1))
            if z_range[0] <= len(zs) <= z_range[1] and fill >= min_fill:
                found.append((int(sizes[c]), comps == c))
                picked += 1
    found.sort(key=lambda t: -t[0])
    step = max(1, len(found) // n) if found else 1
    return [m for _, m in found[::step][:n]]


def otsu_component(grey: np.ndarray, rank: int = 0, max_frac: float = 0.3) -> np.ndarray:
    """The ``rank``-th largest connected component (2D, or 3D for a volume) of the minority side
    of an Otsu threshold, among those under ``max_frac`` of the image: a structure to put a box
    around and score against."""
    blurred = grey if grey.ndim == 3 else cv2.GaussianBlur(grey, (5, 5), 0)
    _, fg = cv2.threshold(blurred.reshape(-1, blurred.shape[-1]), 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    fg = fg.reshape(blurred.shape).astype(bool)
    if fg.mean() > 0.5:
        fg = ~fg
    comps = _components_3d(fg)
    sizes = np.bincount(comps.ravel())
    sizes[0] = 0
    sizes[sizes > max_frac * fg.size] = 0
    return comps == int(np.argsort(-sizes)[rank])


def _grey(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def mr_volume() -> Labelled:
    """nibabel's EPI test series, first volume (24 slices of 96x128), as uint8."""
    import SimpleITK as sitk

    from tools.modalities import source_path

    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(source_path("nibabel", "example4d.nii.gz"))))[0]
    return Labelled("MR", stretch_to_uint8(arr), np.zeros(arr.shape, np.uint8), (1.0, 1.0, 1.0))


def mr_structures(slabs=((6, 5), (12, 9))) -> list[np.ndarray]:
    """The MR volume's largest bright structure (an Otsu component, the head) cut to slabs of
    (first slice, slices): short 3D cases over a few slices."""
    comp = otsu_component(mr_volume().image, 0, max_frac=0.6)
    out = []
    for z0, n in slabs:
        keep = np.zeros_like(comp)
        keep[z0:z0 + n] = comp[z0:z0 + n]
        out.append(keep)
    return out


def photo(name: str) -> np.ndarray:
    from tools.modalities import source_path

    img = cv2.imread(str(source_path("skimage", name)), cv2.IMREAD_UNCHANGED)
    if img.ndim == 3:
        img = cv2.cvtColor(img[:, :, :3], cv2.COLOR_BGR2RGB)
    return img


def _write(out: Path, name: str, image: np.ndarray, labels: np.ndarray, spacing=None) -> str:
    labels = relabel_consecutive(labels.astype(np.int64))
    extra = {} if spacing is None else {"spacing": np.asarray(spacing, np.float64)}
    save_npz(out / "inputs" / name, imgs=image, boxes=boxes_from_labels(labels), **extra)
    save_npz(out / "gts" / name, gts=labels, **extra)
    return name


def write_mix(out: Path, short_nuclei: int = 3) -> list[str]:
    """Write the mix into ``out/inputs`` and ``out/gts``; returns the case names.  ``short_nuclei``:
    how many short 3D nuclei cases (more make a larger set of the same kinds: bench-throughput)."""
    names = []
    ct, n3 = ct_chest(), nuclei_3d()
    for i, mask in enumerate(short_structures(ct.labels, 6)):
        names.append(_write(out, f"3DBox_CT_short{i}.npz", ct.image, mask, ct.spacing))
    for i, mask in enumerate(short_structures(n3.labels, short_nuclei, min_voxels=100)):
        names.append(_write(out, f"3DBox_Microscope_short{i}.npz", n3.image, mask, n3.spacing))
    mr = mr_volume()
    for i, mask in enumerate(mr_structures()):
        names.append(_write(out, f"3DBox_MR_short{i}.npz", mr.image, mask, mr.spacing))
    # 1-box 2D of several sizes
    z = ct.image.shape[0] // 2
    lung = (ct.labels[z] == np.bincount(ct.labels[z].ravel())[1:].argmax() + 1)
    names.append(_write(out, "2DBox_CT_onebox.npz", ct.image[z], lung))
    n2 = nuclei_2d()
    nucleus = n2.labels == np.bincount(n2.labels.ravel())[1:].argmax() + 1
    names.append(_write(out, "2DBox_Microscope_onebox.npz", n2.image, nucleus))
    for name, tag, scale in (("camera.png", "camera", 1), ("coffee.png", "coffee", 1), ("coffee.png", "coffee12mp", 0)):
        img = photo(name)
        if scale == 0:                 # a 12 MP photograph's size (3024x4032)
            img = cv2.resize(img, (4032, 3024), interpolation=cv2.INTER_CUBIC)
        names.append(_write(out, f"2DBox_Photo_{tag}.npz", img, otsu_component(_grey(img))))
    # many-box 2D
    names.append(_write(out, "2DBox_Microscope_many125.npz", n2.image, n2.labels))
    big = tiled_nuclei(1920, 2560, 241)
    names.append(_write(out, "2DBox_Microscope_many241.npz", big.image, big.labels))
    # long and many-label volumes
    names.append(_write(out, "3DBox_CT_whole34.npz", ct.image, ct.labels, ct.spacing))
    coronal = np.ascontiguousarray(ct.image.transpose(1, 0, 2))
    coronal_labels = np.ascontiguousarray(ct.labels.transpose(1, 0, 2))
    names.append(_write(out, "3DBox_CT_coronal128.npz", coronal, coronal_labels,
                        (ct.spacing[1], ct.spacing[0], ct.spacing[2])))
    names.append(_write(out, "3DBox_Microscope_nuclei31.npz", n3.image, n3.labels, n3.spacing))
    return names


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("out/case-mix"))
    args = ap.parse_args(argv)
    names = write_mix(args.out)
    print(f"{len(names)} cases in {args.out}/inputs (ground truth in {args.out}/gts)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
