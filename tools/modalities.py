"""Public images of more kinds than the CT and nuclei of ``tools/public_data``: MR, more CT,
ultrasound, photographs (a fundus image among them) and brightfield microscopy, from the test
and sample files that registry wheels ship.  Split per file into calibration and held-out:

* nibabel==5.4.2 (MR: NIfTI volumes and DICOM slices),
* pydicom==3.0.2 (MR, CT and ultrasound DICOM),
* scikit-image==0.26.0 (photographs, a fundus photograph, microscopy).

A file is either calibration or held-out, never both, and the bundled sample cases use none
of them.  ``calibration_set`` and ``held_out_sets`` add the CT and nuclei of
``tools.public_data`` (held-out: four axial CT slices and two nuclei quadrants).  These images have no labels; their box prompts come from :func:`structure_boxes`
(Otsu threshold, connected components), which is enough to measure whether the int8 models
agree with the float ones on real anatomy and texture.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from qmedsam_eval.label_boxes import boxes_from_labels, relabel_consecutive
from tools.public_data import DATA, calibration_slices, ct_chest, nuclei_2d, quadrant, stretch_to_uint8
from tools.wheel_fetch import CACHE, download_wheel, extract_members

WHEELS = {
    "nibabel": ("nibabel==5.4.2", "nibabel/tests/data/"),
    "nibabel-nicom": ("nibabel==5.4.2", "nibabel/nicom/tests/data/"),
    "pydicom": ("pydicom==3.0.2", "pydicom/data/test_files/"),
    "skimage": ("scikit-image==0.26.0", "skimage/data/"),
}


@dataclass(frozen=True)
class Source:
    """One file: which wheel folder, its name, its modality, and which slices/frames to use."""

    folder: str
    file: str
    modality: str
    frames: tuple[int, ...] | None = None    # slices of a volume / frames of a clip (None: all)


# Calibration (never held out).
CALIBRATION = (
    Source("nibabel", "example4d.nii.gz", "MR"),              # EPI, first volume, 24 slices
    Source("nibabel", "anatomical.nii", "MR"),                # T1, 25 slices
    Source("pydicom", "examples_overlay.dcm", "MR"),
    Source("pydicom", "J2K_pixelrep_mismatch.dcm", "CT"),
    Source("pydicom", "examples_ybr_color.dcm", "US", tuple(range(0, 30, 3))),
    Source("pydicom", "examples_palette.dcm", "US"),
    Source("skimage", "astronaut.png", "Photo"),
    Source("skimage", "rocket.jpg", "Photo"),
    Source("skimage", "camera.png", "Photo"),
    Source("skimage", "microaneurysms.png", "Photo"),
    Source("skimage", "cell.png", "Microscope"),
)
# Held out for agreement checks only.
HELD_OUT = (
    Source("nibabel-nicom", "0.dcm", "MR"),
    Source("nibabel-nicom", "1.dcm", "MR"),
    Source("nibabel-nicom", "slicethickness_empty_string.dcm", "MR"),
    Source("pydicom", "MR_small.dcm", "MR"),
    Source("pydicom", "CT_small.dcm", "CT"),
    Source("pydicom", "693_J2KI.dcm", "CT"),
    Source("pydicom", "examples_rgb_color.dcm", "US"),
    Source("pydicom", "examples_jpeg2k.dcm", "US"),
    Source("skimage", "retina.jpg", "Photo"),
    Source("skimage", "chelsea.png", "Photo"),
    Source("skimage", "coffee.png", "Photo"),
    Source("skimage", "ihc.png", "Microscope"),
)


def source_path(folder: str, file: str) -> Path:
    requirement, prefix = WHEELS[folder]
    dest = DATA / folder
    if not (dest / file).exists():
        extract_members(download_wheel(requirement, CACHE / "wheels"), prefix, dest)
    return dest / file


def _to_uint8(a: np.ndarray) -> np.ndarray:
    """Grey (H, W) or colour (H, W, 3) uint8; other depths are stretched (0.5-99.5 percentiles)."""
    if a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]
    return a if a.dtype == np.uint8 else stretch_to_uint8(a)


def load(src: Source) -> list[tuple[str, np.ndarray]]:
    """(tag, 2D uint8 image) of each slice/frame of a source; colour as RGB."""
    path = source_path(src.folder, src.file)
    if src.folder == "skimage":
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ValueError(f"{path}: unreadable image")
        if img.ndim == 3:
            img = cv2.cvtColor(img[:, :, :3], cv2.COLOR_BGR2RGB)
        frames = [img]
    else:
        import SimpleITK as sitk

        arr = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))   # (N, H, W[, 3]) or (T, N, H, W)
        if arr.ndim == 4 and arr.shape[-1] not in (3, 4):
            arr = arr[0]                                              # the first volume of a series
        frames = list(arr if arr.dtype == np.uint8 else stretch_to_uint8(arr))   # one window per volume
    picks = src.frames if src.frames is not None else range(len(frames))
    stem = src.file.split(".")[0]
    return [(f"{src.modality.lower()}-{stem}-{i}", _to_uint8(np.asarray(frames[i]))) for i in picks
            if i < len(frames) and np.ptp(frames[i]) > 0]


def images(sources) -> list[tuple[str, str, np.ndarray]]:
    """(modality, tag, image) of every usable slice of ``sources``."""
    return [(s.modality, tag, img) for s in sources for tag, img in load(s)]


def structure_boxes(img: np.ndarray, max_boxes: int = 8, min_frac: float = 0.002,
                    max_frac: float = 0.5) -> np.ndarray:
    """Box prompts (K, 4) around bright/dark structures of an unlabelled image: Otsu threshold
    (the minority side is the foreground), connected components between ``min_frac`` and
    ``max_frac`` of the image, the largest first."""
    grey = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    grey = cv2.GaussianBlur(grey, (5, 5), 0)
    _, fg = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    if fg.mean() > 0.5:
        fg = 1 - fg
    n, _, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8), connectivity=8)
    area = grey.size
    keep = [i for i in range(1, n) if min_frac * area <= stats[i, cv2.CC_STAT_AREA] <= max_frac * area]
    keep.sort(key=lambda i: -stats[i, cv2.CC_STAT_AREA])
    boxes = [[stats[i, cv2.CC_STAT_LEFT], stats[i, cv2.CC_STAT_TOP],
              stats[i, cv2.CC_STAT_LEFT] + stats[i, cv2.CC_STAT_WIDTH] - 1,
              stats[i, cv2.CC_STAT_TOP] + stats[i, cv2.CC_STAT_HEIGHT] - 1] for i in keep[:max_boxes]]
    return np.asarray(boxes, dtype=np.int64).reshape(-1, 4)


EVAL_CT_SLICES = (6, 14, 22, 30)       # wide-window axial CT slices held out from calibration
EVAL_NUCLEI_QUADS = (0, 3)


def labelled_pairs(ct_slices, quads, max_boxes: int = 16):
    """Real (image, boxes) pairs: CT axial slices with their structures, nuclei quadrants."""
    ct, n2 = ct_chest(), nuclei_2d()
    pairs = []
    for z in ct_slices:
        lab = relabel_consecutive(ct.labels[z])
        if lab.max():
            pairs.append((ct.image[z], boxes_from_labels(lab)[:max_boxes]))
    for i in quads:
        lab = relabel_consecutive(quadrant(n2.labels, i))
        pairs.append((quadrant(n2.image, i), boxes_from_labels(lab)[:max_boxes]))
    return pairs


def held_out_names() -> set[str]:
    """Tags of the ``tools.public_data`` slices that calibration must not use."""
    return ({f"ct-wide-axial-{z}" for z in EVAL_CT_SLICES}
            | {f"nuclei2d-quad-{i}" for i in EVAL_NUCLEI_QUADS} | {"nuclei2d-full"})


def held_out_sets() -> dict[str, list]:
    """Held-out (image, boxes) pairs per modality: labelled CT and nuclei, and the unlabelled
    ``HELD_OUT`` files with :func:`structure_boxes`."""
    sets = {"CT": labelled_pairs(EVAL_CT_SLICES, ()), "Microscope": labelled_pairs((), EVAL_NUCLEI_QUADS)}
    for modality, _, img in images(HELD_OUT):
        boxes = structure_boxes(img)
        if len(boxes):
            sets.setdefault(modality, []).append((img, boxes))
    return sets


def calibration_entries(n: int) -> list[tuple[str, str, np.ndarray]]:
    """``n`` (modality, tag, image) calibration slices, taken in turn from each modality (CT,
    microscopy, MR, ultrasound, photographs) so that any prefix is mixed; held-out slices never
    appear."""
    held = held_out_names()
    by_modality: dict[str, list] = {"CT": [], "Microscope": []}
    for tag, img in calibration_slices():
        if tag not in held:
            by_modality["CT" if tag.startswith("ct-") else "Microscope"].append((tag, img))
    for modality, tag, img in images(CALIBRATION):
        by_modality.setdefault(modality, []).append((tag, img))
    out, i = [], 0
    while len(out) < n and any(i < len(v) for v in by_modality.values()):
        out.extend((m, *v[i]) for m, v in by_modality.items() if i < len(v))
        i += 1
    return out[:n]


def calibration_set(n: int) -> list[tuple[str, np.ndarray]]:
    """``n`` (tag, image) calibration slices in the order of :func:`calibration_entries`."""
    return [(tag, img) for _, tag, img in calibration_entries(n)]
