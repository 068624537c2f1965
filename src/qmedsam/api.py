"""The Python API; the command line segments through the same model, precision and segmenting code.

Whole cases, as the challenge gives them::

    seg = qmedsam.Segmenter()                    # models shipped with the package, --precision auto
    labels = seg.segment(image, boxes)           # (H, W[, 3]) + (N, 4), or (D, H, W) + (N, 6)

and box by box against one encoded image, in the manner of Segment Anything's ``SamPredictor``::

    session = seg.set_image(image)               # one encoder pass
    mask, iou = session.predict([x0, y0, x1, y1])   # a decoder call: no encoder pass

Arrays follow the challenge's conventions (uint8 intensities, inclusive pixel boxes); bad input
raises :class:`qmedsam.CaseError` with the one-line message the command line prints.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from qmedsam.cases.read import Case, CaseError, check_boxes, check_case, modality_of
from qmedsam.image.predictor import ImagePredictor
from qmedsam.model.folder import EngineError, default_models
from qmedsam.model.model import ModelSettings
from qmedsam.precision.setting import Precision
from qmedsam.segment.case_run import segment_case
from qmedsam.segment.options import SegmentOptions

__all__ = ["Segmenter", "PromptSession", "CaseError", "EngineError"]


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
