"""Real labelled images from PyPI wheels: the demo, test and calibration data.

* ``slicerio==1.4.0``: a chest CT (128x128x34, 3.05x3.05x10 mm) with a 7-structure
  label map (ribs, cervical/thoracic/lumbar spine, right/left lung, tissue).
* ``stardist==0.9.2``: fluorescence nuclei, 2D (512x512, 125 instances) and
  3D (31x61x57, 52 instances), with instance masks.

Arrays are returned in the challenge's axis order: volumes (D, H, W),
spacing (z, y, x) in mm.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tools.wheel_fetch import CACHE, download_wheel, extract_members

SLICERIO = "slicerio==1.4.0"
STARDIST = "stardist==0.9.2"
DATA = CACHE / "public"
CT_WINDOW = (-1000.0, 1000.0)   # HU range mapped to 0..255 (lungs, soft tissue and bone visible)


@dataclass
class Labelled:
    name: str
    image: np.ndarray          # uint8, (H, W, 3) for 2D or (D, H, W) for 3D
    labels: np.ndarray         # integer label map, image shape without channels
    spacing: tuple[float, ...] | None = None


def _files(requirement: str, prefix: str) -> Path:
    dest = DATA / requirement.split("==")[0]
    if not dest.exists() or not any(dest.iterdir()):
        wheel = download_wheel(requirement, CACHE / "wheels")
        extract_members(wheel, prefix, dest)
    return dest


def window_to_uint8(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    scaled = (np.clip(values.astype(np.float32), lo, hi) - lo) / (hi - lo)
    return np.round(scaled * 255.0).astype(np.uint8)


def stretch_to_uint8(values: np.ndarray, lo_pct=0.5, hi_pct=99.5) -> np.ndarray:
    lo, hi = np.percentile(values, [lo_pct, hi_pct])
    return window_to_uint8(values, float(lo), float(max(hi, lo + 1)))


def _display_order(xyz: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(xyz.transpose(2, 1, 0)[:, ::-1, ::-1])


def ct_chest(window=CT_WINDOW) -> Labelled:
    import nrrd

    root = _files(SLICERIO, "slicerio/data/")
    hu, header = nrrd.read(str(root / "CTChest4.nrrd"))
    seg, _ = nrrd.read(str(root / "Segmentation.seg.nrrd"))
    # nrrd arrays are (x, y, z) in LPS with negative x/y directions; the challenge wants
    # (z, y, x), and radiological display puts anterior at the top, patient's right on the left
    vol = window_to_uint8(_display_order(hu), *window)
    labels = _display_order(seg).astype(np.uint8)
    dirs = np.abs(np.asarray(header["space directions"], dtype=float))
    sx, sy, sz = (float(np.linalg.norm(dirs[i])) for i in range(3))
    return Labelled("CT", np.ascontiguousarray(vol), labels, (sz, sy, sx))


def nuclei_2d() -> Labelled:
    import tifffile

    root = _files(STARDIST, "stardist/data/images/")
    img = stretch_to_uint8(tifffile.imread(str(root / "img2d.tif")))
    mask = tifffile.imread(str(root / "mask2d.tif")).astype(np.int32)
    return Labelled("Microscope", np.repeat(img[:, :, None], 3, axis=2), mask)


def nuclei_3d() -> Labelled:
    import tifffile

    root = _files(STARDIST, "stardist/data/images/")
    vol = stretch_to_uint8(tifffile.imread(str(root / "img3d.tif")))
    mask = tifffile.imread(str(root / "mask3d.tif")).astype(np.int32)
    return Labelled("Microscope", vol, mask, (1.0, 1.0, 1.0))


def quadrant(a: np.ndarray, i: int, size: int = 256) -> np.ndarray:
    """Quadrant i (row-major) of the 512x512 nuclei image or its labels."""
    return a[(i // 2) * size:(i // 2 + 1) * size, (i % 2) * size:(i % 2 + 1) * size]


def calibration_slices(limit: int | None = None) -> list[tuple[str, np.ndarray]]:
    """2D uint8 slices for post-training calibration, each with a provenance tag.

    CT: every axial slice, and every 4th coronal and sagittal slice, in three
    windows (wide, lung, soft tissue); nuclei: the 2D image, its quadrants and
    every 3D slice.  Deterministic order, interleaved so any prefix is mixed.
    """
    import nrrd

    root = _files(SLICERIO, "slicerio/data/")
    hu = _display_order(nrrd.read(str(root / "CTChest4.nrrd"))[0])
    groups: list[list[tuple[str, np.ndarray]]] = []
    for wname, win in (("wide", CT_WINDOW), ("lung", (-1350.0, 150.0)), ("soft", (-160.0, 240.0))):
        vol = window_to_uint8(hu, *win)
        groups.append([(f"ct-{wname}-axial-{z}", vol[z]) for z in range(vol.shape[0])])
        groups.append([(f"ct-{wname}-coronal-{y}", vol[:, y, :]) for y in range(0, vol.shape[1], 4)])
        groups.append([(f"ct-{wname}-sagittal-{x}", vol[:, :, x]) for x in range(0, vol.shape[2], 4)])
    n2 = nuclei_2d().image[:, :, 0]
    quads = [(f"nuclei2d-quad-{i}", quadrant(n2, i)) for i in range(4)]
    groups.append([("nuclei2d-full", n2)] + quads)
    n3 = nuclei_3d().image
    groups.append([(f"nuclei3d-z-{z}", n3[z]) for z in range(n3.shape[0])])
    mixed: list[tuple[str, np.ndarray]] = []
    longest = max(len(g) for g in groups)
    for i in range(longest):
        mixed.extend(g[i] for g in groups if i < len(g))
    return mixed[:limit] if limit else mixed


def tiled_nuclei(height: int, width: int, n_labels: int, seed: int = 0) -> Labelled:
    """A large fluorescence image tiled from the 2D nuclei image (each tile rotated/flipped at
    random, instances kept apart per tile), with ``n_labels`` of its nuclei labelled 1..n."""
    rng = np.random.default_rng(seed)
    src = nuclei_2d()
    size = src.labels.shape[0]
    rows, cols = -(-height // size), -(-width // size)
    image = np.zeros((rows * size, cols * size, 3), np.uint8)
    labels = np.zeros((rows * size, cols * size), np.int64)
    offset = 0
    for r in range(rows):
        for c in range(cols):
            turn, flip = int(rng.integers(4)), bool(rng.integers(2))
            img, lab = np.rot90(src.image, turn), np.rot90(src.labels, turn)
            if flip:
                img, lab = img[:, ::-1], lab[:, ::-1]
            image[r * size:(r + 1) * size, c * size:(c + 1) * size] = img
            labels[r * size:(r + 1) * size, c * size:(c + 1) * size] = np.where(lab > 0, lab + offset, 0)
            offset = int(labels.max())
    image, labels = image[:height, :width], labels[:height, :width]
    present = np.unique(labels)
    keep = rng.choice(present[present > 0], n_labels, replace=False)
    kept = np.where(np.isin(labels, keep), labels, 0)
    _, dense = np.unique(kept, return_inverse=True)          # 0 stays 0: it is the smallest value
    return Labelled("Microscope", np.ascontiguousarray(image), dense.reshape(kept.shape).astype(np.uint16))


def tiled_nuclei_3d(z_copies: int = 4, x_copies: int = 2, seed: int = 0) -> Labelled:
    """A long 3D fluorescence volume with many small labels: the 3D nuclei volume repeated
    ``z_copies`` times along z and ``x_copies`` times along x, each copy flipped at random along
    each axis and its nuclei labelled apart from every other copy's (4 x 2: 124 slices, 408 labels)."""
    rng = np.random.default_rng(seed)
    src = nuclei_3d()
    _, dense = np.unique(src.labels, return_inverse=True)      # 1..n, 0 stays 0
    labels = dense.reshape(src.labels.shape)
    n = int(labels.max())
    rows = []
    for zi in range(z_copies):
        copies = []
        for xi in range(x_copies):
            axes = tuple(int(a) for a in np.flatnonzero(rng.integers(2, size=3)))
            vol, lab = np.flip(src.image, axes), np.flip(labels, axes)
            copies.append((vol, np.where(lab > 0, lab + (zi * x_copies + xi) * n, 0)))
        rows.append([np.concatenate(part, axis=2) for part in zip(*copies)])
    vol, lab = (np.ascontiguousarray(np.concatenate(part, axis=0)) for part in zip(*rows))
    return Labelled("Microscope", vol, lab.astype(np.uint16), src.spacing)
