"""Reading and checking challenge cases (the I/O contract of the reference doc).

``load_case`` returns a clean :class:`Case` or raises :class:`CaseError` with a
one-line reason.  What users would expect is repaired silently: boxes reaching
outside the image are clipped, a grayscale 2D image is accepted, integer or
float images already in 0..255 are cast to uint8.  What cannot be trusted is
refused: missing keys, wrong shapes, NaNs, boxes with max < min, boxes wholly
outside the image, z ranges outside the volume.
"""
from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class CaseError(ValueError):
    """A case that cannot be segmented; the message is one line."""


@dataclass
class Case:
    name: str                 # file name, e.g. 3DBox_CT_0566.npz
    image: np.ndarray         # uint8: 2D (H, W, 3) or (H, W); 3D (D, H, W)
    boxes: np.ndarray         # int64: 2D (N, 4) x0,y0,x1,y1; 3D (N, 6) x0,y0,z0,x1,y1,z1 (inclusive)
    spacing: np.ndarray | None = None
    notes: tuple[str, ...] = ()
    # 'box': the 2024 contract; 'recist' (prompts: a list of qmedsam.cases.recist.Lesion) and
    # 'interactive' (prompts: a qmedsam.cases.interactive.Interactive round) are the successors' volumes, whose boxes are each object's reach (N, 6)
    kind: str = "box"
    prompts: object = None

    @property
    def is_3d(self) -> bool:
        return self.kind != "box" or is_3d_name(self.name)

    @property
    def label_shape(self) -> tuple[int, ...]:
        return self.image.shape if self.is_3d else self.image.shape[:2]

    @property
    def label_dtype(self):
        return np.uint8 if self.kind != "box" else label_dtype(len(self.boxes))


def is_3d_name(name: str) -> bool:
    """The contract's rule: a case is 3D when its file name starts with ``3D``."""
    return Path(name).name.startswith("3D")


def modality_of(name: str) -> str:
    """Second ``_`` field of a challenge name (``3DBox_CT_0566.npz`` -> ``CT``)."""
    parts = Path(name).stem.split("_")
    return parts[1] if len(parts) > 2 else "unknown"


def label_dtype(n_boxes: int):
    """uint8 holds labels up to 255; more boxes need uint16."""
    return np.uint8 if n_boxes <= 255 else np.uint16


def _as_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == bool or not (np.issubdtype(image.dtype, np.integer)
                                   or np.issubdtype(image.dtype, np.floating)):
        raise CaseError(f"imgs has unsupported dtype {image.dtype} (expected uint8)")
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        raise CaseError("imgs contains NaN or infinite values")
    lo, hi = float(image.min()), float(image.max())
    if lo < 0 or hi > 255:
        raise CaseError(f"imgs dtype {image.dtype} with values in [{lo:g}, {hi:g}], "
                        "expected uint8 intensities 0..255")
    return np.round(image).astype(np.uint8)


def check_boxes(raw: np.ndarray, width: int, height: int, depth: int | None):
    """Validate and clip boxes for an image of (width, height[, depth]); returns (int64 boxes, notes)."""
    cols = 4 if depth is None else 6
    boxes = np.asarray(raw)
    if boxes.size == 0:
        return np.zeros((0, cols), dtype=np.int64), ("no boxes",)
    if boxes.ndim == 1 and boxes.shape[0] == cols:
        boxes = boxes[None]
    if boxes.ndim != 2 or boxes.shape[1] != cols:
        raise CaseError(f"boxes has shape {tuple(np.shape(raw))}, expected (N, {cols})")
    if not (np.issubdtype(boxes.dtype, np.integer) or np.issubdtype(boxes.dtype, np.floating)):
        raise CaseError(f"boxes has unsupported dtype {boxes.dtype}")
    if np.issubdtype(boxes.dtype, np.floating) and not np.isfinite(boxes).all():
        raise CaseError("boxes contain NaN or infinite values")
    half = cols // 2
    lo, hi = boxes[:, :half].astype(np.float64), boxes[:, half:].astype(np.float64)
    bad = np.nonzero((hi < lo).any(axis=1))[0]
    if len(bad):
        raise CaseError(f"box {bad[0] + 1} has max < min: {boxes[bad[0]].tolist()}")
    limits = np.array([width - 1, height - 1] + ([] if depth is None else [depth - 1]), float)
    outside = np.nonzero(((hi < 0) | (lo > limits)).any(axis=1))[0]
    if len(outside):
        what = "z range outside the volume" if depth is not None and (
            (hi[outside[0], 2] < 0) or (lo[outside[0], 2] > depth - 1)) else "outside the image"
        raise CaseError(f"box {outside[0] + 1} lies {what}: {boxes[outside[0]].tolist()}")
    clipped = np.concatenate([np.clip(lo, 0, limits), np.clip(hi, 0, limits)], axis=1)
    notes = ("boxes clipped to the image",) if not np.array_equal(clipped, np.concatenate([lo, hi], 1)) else ()
    return np.round(clipped).astype(np.int64), notes


SUCCESSOR_KEYS = ("recist", "clicks", "clicks_order", "prev_pred")


def load_case(path: str | Path) -> Case:
    """Read and check the case file at ``path``: told apart by its keys, a RECIST case (``recist``),
    an interactive round (``clicks``/``prev_pred``, or ``boxes`` as a list of dicts) or a 2024 case
    (:func:`check_case`).  Pickled members are read without running any code."""
    from qmedsam.cases.safe_npz import UnsafePickle, member_names, read_members

    path = Path(path)
    try:
        keys = member_names(path)
        missing = [k for k in ("imgs",) if k not in keys]
        if missing or not (keys & {"boxes", *SUCCESSOR_KEYS}):
            missing += [] if keys & {"boxes", *SUCCESSOR_KEYS} else ["boxes"]
            raise CaseError(f"missing key(s) {', '.join(missing)} (has: {', '.join(sorted(keys)) or 'none'})")
        m = read_members(path, ("imgs", "boxes", "spacing", *SUCCESSOR_KEYS))
    except CaseError:
        raise
    except UnsafePickle as e:
        raise CaseError(f"refused: {e}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as e:
        raise CaseError(f"unreadable npz ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if "recist" in m:
        return successor_case(path.name, m, "recist")
    if keys & {"clicks", "clicks_order", "prev_pred"} or "boxes" in m and m["boxes"].dtype.hasobject:
        return successor_case(path.name, m, "interactive")
    return check_case(path.name, m["imgs"], m["boxes"], m.get("spacing"))


def _spacing(spacing) -> np.ndarray | None:
    if spacing is None:
        return None
    spacing = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if spacing.shape != (3,) or not np.isfinite(spacing).all() or (spacing <= 0).any():
        raise CaseError(f"spacing {spacing.tolist()} is not 3 positive numbers")
    return spacing


def successor_case(name: str, members: dict, kind: str) -> Case:
    """A RECIST or interactive :class:`Case` from its members; a volume whatever its name."""
    from qmedsam.cases import interactive, recist

    image = _as_uint8(np.asarray(members["imgs"]))
    if image.ndim != 3 or min(image.shape) < 1:
        raise CaseError(f"{kind} case imgs has shape {image.shape}, expected (D, H, W)")
    spacing = _spacing(members.get("spacing"))
    if kind == "recist":
        found = recist.parse_recist(members["recist"], image.shape)
        reach = [recist.lesion_reach(lesion, spacing, image.shape) for lesion in found]
    else:
        found = interactive.parse_interactive(members, image.shape)
        reach = interactive.interactive_reach(found, image.shape)
    boxes = np.asarray(reach, np.int64).reshape(-1, 6)
    return Case(name, np.ascontiguousarray(image), boxes, spacing, (), kind, found)


def check_case(name: str, image, raw_boxes, spacing=None) -> Case:
    """A clean :class:`Case` from a case's arrays (``name`` says 2D or 3D), or :class:`CaseError`
    with a one-line reason; the command line and the Python API check cases here."""
    image = _as_uint8(np.asarray(image))
    if is_3d_name(name):
        if image.ndim != 3 or min(image.shape) < 1:
            raise CaseError(f"3D case imgs has shape {image.shape}, expected (D, H, W)")
        d, h, w = image.shape
        boxes, notes = check_boxes(raw_boxes, w, h, d)
        spacing = _spacing(spacing)
    else:
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))) or min(image.shape[:2]) < 1:
            raise CaseError(f"2D case imgs has shape {image.shape}, expected (H, W, 3) or (H, W)")
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        h, w = image.shape[:2]
        boxes, notes = check_boxes(raw_boxes, w, h, None)
    return Case(name, np.ascontiguousarray(image), boxes, spacing, notes)


def peek_boxes(path: str | Path) -> np.ndarray | None:
    """A case's raw boxes without reading its image (npz members load one at a time), for planning
    before the models load; None where they cannot be read (:func:`load_case` then says why)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if set(data.files) & set(SUCCESSOR_KEYS):
                return None
            return np.asarray(data["boxes"]) if "boxes" in data.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None
