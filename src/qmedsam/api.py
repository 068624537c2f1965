"""The Python API; the command line segments through the same model, precision and segmenting code.

Whole cases, as the challenge gives them::

    seg = qmedsam.Segmenter()                    # models shipped with the package, --precision auto
    labels = seg.segment(image, boxes)           # (H, W[, 3]) + (N, 4), or (D, H, W) + (N, 6)

prompt by prompt against one encoded image, in the manner of Segment Anything's ``SamPredictor``::

    session = seg.set_image(image)               # one encoder pass
    mask, iou = session.predict([x0, y0, x1, y1])   # a decoder call: no encoder pass
    mask, iou, logits = session.prompt(points=[[x, y]], labels=[1], box=[x0, y0, x1, y1])
    mask, iou, logits = session.prompt(box=[x0, y0, x1, y1], mask_input=logits)

and the successors' volume prompts, as the command line runs those case files::

    labels = seg.from_recist(volume, recist, spacing=spacing)     # RECIST lines -> 3D lesions
    labels = seg.from_slice(volume, z, [x0, y0, x1, y1])         # one 2D box -> its 3D object
    labels = seg.interact(volume, boxes=..., clicks=..., clicks_order=..., prev_pred=...)

Arrays follow the challenge's conventions (uint8 intensities, inclusive pixel boxes); bad input
raises :class:`qmedsam.CaseError` with the one-line message the command line prints.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from qmedsam.cases.read import Case, CaseError, check_boxes, check_case, modality_of, successor_case
from qmedsam.image.predictor import ImagePredictor, Prediction
from qmedsam.model.folder import EngineError, default_models
from qmedsam.model.model import ModelSettings
from qmedsam.precision.setting import Precision
from qmedsam.segment.case_run import segment_case
from qmedsam.segment.options import SegmentOptions

__all__ = ["Segmenter", "PromptSession", "Prediction", "CaseError", "EngineError"]


def case_from_arrays(image, boxes, spacing=None) -> Case:
    """A checked :class:`Case` from arrays: 3D when the boxes have 6 columns (x0, y0, z0, x1, y1, z1),
    else 2D; the same checks and repairs as a case file (:func:`qmedsam.cases.read.check_case`)."""
    b = np.asarray(boxes)
    is_3d = b.ndim == 2 and b.shape[1] == 6 or b.ndim == 1 and b.shape[0] == 6
    return check_case("3DBox_array.npz" if is_3d else "2DBox_array.npz", np.asarray(image), b, spacing)


def segment_options(*, mode_3d: str | None = None, zoom: str = "auto", zoom_crops: int | None = None,
                    interpolate_slices: float | None = None, max_boxes: int | str | None = None,
                    overlap: bool | None = None) -> SegmentOptions:
    """:class:`SegmentOptions` keyword for keyword the command line's (unnamed ones: its defaults)."""
    d = SegmentOptions()
    return SegmentOptions(mode_3d=mode_3d or d.mode_3d,
                          zoom_crops=0 if zoom == "off" else d.zoom_crops if zoom_crops is None else zoom_crops,
                          interpolate=d.interpolate if interpolate_slices is None else interpolate_slices,
                          max_boxes=d.max_boxes if max_boxes is None else max_boxes,
                          overlap=d.overlap if overlap is None else overlap)


class Segmenter:
    """LiteMedSAM on OpenVINO: a models folder (default: the package's own), a precision
    ('auto', 'int8' or 'fp32', as ``--precision``) and OpenVINO settings; ``memory``: the bytes it may
    use where several share a machine's memory.  The model loads on first use (each encoder when a
    case first needs it) and stays loaded for the object's life."""

    def __init__(self, models: str | Path | None = None, precision: str = "auto", *, cache: str | Path | None = None,
                 threads: int = 0, float_ops: str = "auto", decoder_windows: bool = True, memory: int | None = None):
        self.precision = Precision.resolve(precision, Path(models) if models is not None else default_models(),
                                           float_ops)
        self.memory = memory
        self._settings = ModelSettings(None if cache is None else Path(cache), threads, windows=decoder_windows)
        self._model = None

    @property
    def model(self):
        if self._model is None:
            from qmedsam.run.loading import load_model

            self._model = load_model(self.precision, self._settings)[0]      # as for a 2D image first
        return self._model

    def segment(self, image, boxes, *, spacing=None, **options) -> np.ndarray:
        """The label map of one case given as arrays: a 2D image (H, W) or (H, W, 3) with boxes
        (N, 4), or a volume (D, H, W) with boxes (N, 6); ``options`` as the command line's
        (``mode_3d=``, ``zoom=``, ``zoom_crops=``, ``interpolate_slices=``, ``max_boxes=``,
        ``overlap=``).  The same map the command line writes for the same case and options."""
        case = case_from_arrays(image, boxes, spacing)
        opts = segment_options(**options)
        block = opts.block_size(case.image.shape[1:3] if case.is_3d else case.image.shape[:2], self.memory)
        plan = self.precision.plan(case.is_3d, case.boxes, modality_of(case.name))
        return segment_case(case, self.model, plan, opts, block)[0]

    def _run(self, case: Case) -> np.ndarray:
        plan = self.precision.plan(case.is_3d, case.boxes, modality_of(case.name))
        block = SegmentOptions().block_size(case.image.shape[1:3], self.memory)
        return segment_case(case, self.model, plan, SegmentOptions(), block)[0]

    def from_recist(self, volume, recist, *, spacing=None) -> np.ndarray:
        """The lesion labels of ``volume`` (D, H, W) from ``recist`` (D, H, W): each label drawn as
        its longest diameter on one slice (the FLARE 2025 contract); the command line's map."""
        return self._run(successor_case("recist_array.npz", {"imgs": volume, "recist": recist, "spacing": spacing},
                                        "recist"))

    def from_slice(self, volume, z: int, box, *, spacing=None) -> np.ndarray:
        """Label 1 where the object inside ``box`` [x0, y0, x1, y1] on slice ``z`` of ``volume``
        goes on, followed up and down until it ends."""
        from qmedsam.cases.interactive import Interactive, SliceBox

        depth = np.shape(volume)[0] if np.ndim(volume) == 3 else 1
        if not 0 <= int(z) < depth:
            raise CaseError(f"slice {z} is outside the volume's {depth} slices")
        # checked as a round that starts from a click on slice z, then given the box instead
        case = successor_case("slice_array.npz", {"imgs": volume, "spacing": spacing,
                                                  "clicks": [{"fg": [(int(z), 0, 0)], "bg": []}]}, "interactive")
        d, h, w = case.image.shape
        (pixel_box,), _ = check_boxes(np.asarray(box).reshape(1, 4), w, h, None)
        case.prompts = Interactive(1, [SliceBox(int(z), pixel_box, 0, d - 1, known=False)], [{"fg": [], "bg": []}])
        case.boxes = np.array([[pixel_box[0], pixel_box[1], 0, pixel_box[2], pixel_box[3], d - 1]])
        return self._run(case)

    def interact(self, volume, *, boxes=None, clicks=None, clicks_order=None, prev_pred=None,
                 spacing=None) -> np.ndarray:
        """One round of the interactive contract (CVPR 2025), its keys as the case files hold them:
        ``boxes`` (per class a dict of z_min, z_max, z_mid and the middle slice's box), ``clicks``
        (per class ``{'fg': [(z, y, x)...], 'bg': [...]}``), ``clicks_order``, ``prev_pred``."""
        members = {"imgs": volume, "spacing": spacing}
        for key, value in (("boxes", boxes), ("clicks", clicks), ("clicks_order", clicks_order),
                           ("prev_pred", prev_pred)):
            if value is not None:
                members[key] = value
        return self._run(successor_case("interactive_array.npz", members, "interactive"))

    def set_image(self, image) -> "PromptSession":
        """Encode one 2D image (H, W) or (H, W, 3), or one slice, for :meth:`PromptSession.predict`."""
        case = case_from_arrays(image, np.zeros((0, 4), np.int64))
        plan = self.precision.plan(False, None)                  # the encoder a 2D case runs
        return PromptSession(ImagePredictor(self.model, 1).set_image(case.image, plan.encoder))


class PromptSession:
    """One encoded image, decoded box by box (:meth:`Segmenter.set_image`)."""

    def __init__(self, predictor: ImagePredictor):
        self.predictor = predictor
        self.shape = (predictor.geo.height, predictor.geo.width)

    def predict(self, box) -> tuple[np.ndarray, float]:
        """(boolean mask of the image's (H, W), the decoder's predicted IoU) for ``box`` =
        [x0, y0, x1, y1] in the image's pixels (inclusive), as the command line decodes it."""
        height, width = self.shape
        boxes, _ = check_boxes(np.asarray(box).reshape(1, 4), width, height, None)
        masks, iou = self.predictor.predict(boxes)
        return masks[0], float(iou[0])

    def prompt(self, *, box=None, points=None, labels=None, mask_input=None) -> Prediction:
        """SAM's prompts, alone or together: ``box`` [x0, y0, x1, y1], ``points`` [[x, y], ...] in the
        image's pixels with ``labels`` (1 foreground, 0 background), ``mask_input``: a previous
        answer's ``low_res_logits``.  Returns (mask, IoU, low-res logits).  LiteMedSAM learned boxes
        only: a box alone is what it answers best (README)."""
        height, width = self.shape
        if box is None and points is None and mask_input is None:
            raise CaseError("prompt needs a box, points or a mask_input")
        if box is not None:
            box = check_boxes(np.asarray(box).reshape(1, 4), width, height, None)[0][0]
        if points is not None:
            points = np.asarray(points, np.float64).reshape(-1, 2)
            labels = np.ones(len(points)) if labels is None else np.asarray(labels).reshape(-1)
            if len(labels) != len(points) or not np.isin(labels, (0, 1)).all():
                raise CaseError(f"labels must be 0 or 1, one per point ({len(points)} points, {len(labels)} labels)")
            bad = ~((points >= 0) & (points <= [width - 1, height - 1])).all(1)
            if bad.any():
                raise CaseError(f"point {points[bad][0].tolist()} lies outside the {width}x{height} image")
        if mask_input is not None and np.shape(mask_input) != (256, 256):
            raise CaseError(f"mask_input has shape {np.shape(mask_input)}, expected (256, 256) low-res logits")
        return self.predictor.prompt(box, points, labels, mask_input)
