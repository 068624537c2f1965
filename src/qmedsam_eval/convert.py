"""qmedsam-convert: medical images (NIfTI, NRRD, anything SimpleITK reads) <-> challenge ``.npz``.

  to-npz   --image IMG|DIR [--labels LAB|DIR] --out DIR [--modality CT] [--window 40,400]
           image (+ label map) -> <2D|3D>Box_<MODALITY>_<stem>.npz with imgs (uint8), boxes
           (one per label, ascending, inclusive bounds), spacing (array axis order, mm), and with
           labels also gts (labels renumbered 1..N in box order) and label_values (the originals).
           A folder converts every image in it, labels paired by file name.
  to-nifti --segs CASE.npz --reference IMG --out FILE.nii.gz [--case CONVERTED.npz]
           segs -> label image with the reference's size, spacing, origin and direction;
           with --case, labels are mapped back to the original label values.

Intensities: CT is windowed (level, width; default 40,400); every other modality
is clipped at the 0.5 / 99.5 percentiles of its non-zero voxels; both are then
scaled to 0..255.  File formats are SimpleITK's; nothing here parses them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from qmedsam.cases.atomic import replacing, save_npz
from qmedsam_eval.label_boxes import boxes_from_labels as label_boxes
from qmedsam_eval.label_boxes import relabel_consecutive

SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def _sitk():
    import SimpleITK as sitk  # evaluation extra

    return sitk


def stem(path: Path) -> str:
    name = path.name
    for suffix in SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def read_image(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """Array in SimpleITK's (z, y, x) / (y, x) order and the spacing in that same order."""
    sitk = _sitk()
    img = sitk.ReadImage(str(path))
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{path}: {img.GetNumberOfComponentsPerPixel()}-component pixels; expected a scalar image")
    arr = sitk.GetArrayFromImage(img)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    spacing = tuple(float(s) for s in reversed(img.GetSpacing()))[-arr.ndim:]
    return arr, spacing


def to_uint8(arr: np.ndarray, modality: str, window: tuple[float, float] = (40.0, 400.0)) -> np.ndarray:
    arr = arr.astype(np.float64)
    if modality.upper() == "CT":
        level, width = window
        lo, hi = level - width / 2, level + width / 2
    else:
        ref = arr[arr > 0] if (arr > 0).any() else arr
        lo, hi = np.percentile(ref, [0.5, 99.5])
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    return np.round((np.clip(arr, lo, hi) - lo) / (hi - lo) * 255).astype(np.uint8)


def boxes_from_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes, renumbered label map, original values): one inclusive box per label, ascending."""
    values = np.unique(labels)
    gts = relabel_consecutive(labels)
    return label_boxes(gts), gts, values[values != 0]


def convert_case(image: Path, labels: Path | None, out_dir: Path, modality: str,
                 window: tuple[float, float]) -> Path:
    arr, spacing = read_image(image)
    img8 = to_uint8(arr, modality, window)
    kind = "3D" if img8.ndim == 3 else "2D"
    target = out_dir / f"{kind}Box_{modality}_{stem(image)}.npz"
    fields = {"imgs": img8 if kind == "3D" else np.repeat(img8[:, :, None], 3, axis=2),
              "spacing": np.array(spacing, np.float64)}
    if labels is not None:
        lab, lab_spacing = read_image(labels)
        if lab.shape != arr.shape:
            raise ValueError(f"{labels}: label map shape {lab.shape} != image shape {arr.shape}")
        if not np.allclose(lab_spacing, spacing, rtol=1e-4):
            raise ValueError(f"{labels}: spacing {lab_spacing} != image spacing {spacing}")
        boxes, gts, values = boxes_from_labels(lab)
        fields.update(boxes=boxes, gts=gts, label_values=values)
    else:
        fields["boxes"] = np.zeros((0, 6 if kind == "3D" else 4), np.int64)
    save_npz(target, **fields)
    return target


def segs_to_image(segs_path: Path, reference: Path, out: Path, case: Path | None = None) -> Path:
    """Write ``segs`` as a label image on the reference image's grid."""
    sitk = _sitk()
    ref = sitk.ReadImage(str(reference))
    with np.load(segs_path) as f:
        segs = f["segs"]
    if case is not None:
        with np.load(case) as c:
            values = c["label_values"] if "label_values" in c.files else None
        if values is not None:
            lut = np.concatenate([[0], values]).astype(np.int64)
            segs = lut[np.clip(segs.astype(np.int64), 0, len(lut) - 1)]
    want = sitk.GetArrayFromImage(ref).shape
    view = segs[None] if len(want) == 3 and want[0] == 1 and segs.ndim == 2 else segs
    if view.shape != want:
        raise ValueError(f"{segs_path}: segs shape {segs.shape} does not fit reference {reference} {want}")
    dtype = np.uint8 if view.max(initial=0) <= 255 else np.uint16
    img = sitk.GetImageFromArray(view.astype(dtype))
    img.CopyInformation(ref)
    with replacing(out, suffix="".join(s for s in SUFFIXES if out.name.endswith(s))) as tmp:
        sitk.WriteImage(img, str(tmp), useCompression=True)
    return out


def _pairs(image: Path, labels: Path | None) -> list[tuple[Path, Path | None]]:
    if image.is_dir():
        images = sorted(p for p in image.iterdir() if p.name.lower().endswith(SUFFIXES))
        if labels is None:
            return [(p, None) for p in images]
        return [(p, labels / p.name) for p in images]
    return [(image, labels)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="qmedsam-convert", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    a = sub.add_parser("to-npz")
    a.add_argument("--image", type=Path, required=True)
    a.add_argument("--labels", type=Path)
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--modality", default="CT", help="second field of the case name; CT is windowed")
    a.add_argument("--window", default="40,400", help="CT window level,width (HU)")
    b = sub.add_parser("to-nifti")
    b.add_argument("--segs", type=Path, required=True)
    b.add_argument("--reference", type=Path, required=True)
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--case", type=Path, help="the converted case, to restore the original label values")
    args = ap.parse_args(argv)
    if args.command == "to-nifti":
        try:
            print(segs_to_image(args.segs, args.reference, args.out, args.case))
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            print(f"qmedsam-convert: {e}", file=sys.stderr)
            return 1
        return 0
    level, width = (float(v) for v in args.window.split(","))
    failed = 0
    for image, labels in _pairs(args.image, args.labels):
        try:
            if labels is not None and not labels.exists():
                raise ValueError(f"no label map {labels}")
            print(convert_case(image, labels, args.out, args.modality, (level, width)))
        except (OSError, ValueError, RuntimeError) as e:
            failed += 1
            print(f"qmedsam-convert: {image.name}: {e}".replace("\n", " "), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
