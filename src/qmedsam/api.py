"""The Python API, the one the command line runs too.

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

from qmedsam.cases import Case, CaseError, check_boxes, check_case
from qmedsam.engine import EngineError, EngineOptions, float_ops_for
from qmedsam.image_session import ImageSession
from qmedsam.masks import box_mask
from qmedsam.memory import auto_block_size, current_rss_bytes, memory_limit
from qmedsam.model_dir import default_models, model_dir
from qmedsam.policy import engine_encoders
from qmedsam.preprocess import boxes_to_model, image_to_tensor
from qmedsam.segment import Options, Stats, case_plan, segment_case
from qmedsam.slice_interpolation import DEFAULT_TAU
from qmedsam.zoom import MAX_CROPS

__all__ = ["Segmenter", "PromptSession", "CaseError", "EngineError"]


def case_from_arrays(image, boxes, spacing=None) -> Case:
    """A checked :class:`Case` from arrays: 3D when the boxes have 6 columns (x0, y0, z0, x1, y1, z1),
    else 2D; the same checks and repairs as a case file (:func:`qmedsam.cases.check_case`)."""
    b = np.asarray(boxes)
    is_3d = b.ndim == 2 and b.shape[1] == 6 or b.ndim == 1 and b.shape[0] == 6
    return check_case("3DBox_array.npz" if is_3d else "2DBox_array.npz", np.asarray(image), b, spacing)


class Segmenter:
    """LiteMedSAM on OpenVINO: a models folder (default: the package's own), a precision
    ('auto', 'int8' or 'fp32', as ``--precision``) and OpenVINO settings; ``memory``: the bytes it may
    use where several share a machine's memory (``--jobs`` workers).  The models load on first
    use (each encoder when a case first needs it) and stay loaded for the object's life."""

    def __init__(self, models: str | Path | None = None, precision: str = "auto", *, cache: str | Path | None = None,
                 threads: int = 0, float_ops: str = "auto", decoder_windows: bool = True, memory: int | None = None,
                 engine=None):
        self.precision = precision
        self.memory = memory              # bytes this object may use (max_boxes='auto'); None: the process's limit
        self.models = model_dir(Path(models) if models is not None else default_models(), precision)
        self._engine = engine             # the command line hands over the one it loads in the background
        self._settings = (None if cache is None else Path(cache), threads, float_ops, decoder_windows)
        self.last_stats: Stats | None = None     # the counters and cost ledger of the last case

    @property
    def engine(self):
        if self._engine is None:
            from qmedsam.engine import Engine

            cache, threads, float_ops, windows = self._settings
            encoder = engine_encoders(self.models, self.precision)[0]          # as for a 2D image first
            self._engine = Engine(self.models, EngineOptions(cache, threads, "LATENCY", float_ops_for(self.precision, float_ops),
                                                             encoder, windows=windows))
        return self._engine

    def options(self, case: Case, *, mode_3d: str = "fixed", zoom: str = "auto", zoom_crops: int = MAX_CROPS,
                interpolate_slices: float = DEFAULT_TAU, max_boxes: int | str = "auto", overlap: bool = True) -> Options:
        """The segmenting options of ``case``, keyword for keyword the command line's."""
        if max_boxes == "auto":
            h, w = case.image.shape[1:3] if case.is_3d else case.image.shape[:2]
            max_boxes = auto_block_size(h, w, self.memory or memory_limit(), current_rss_bytes())
        return Options(max_boxes=int(max_boxes), mode_3d=mode_3d, overlap=overlap,
                       zoom_crops=zoom_crops if zoom == "auto" else 0, guard=self.precision == "auto",
                       interpolate=interpolate_slices)

    def segment_case(self, case: Case, options: Options | None = None, progress=None) -> np.ndarray:
        """The label map of a checked case (box i -> label i); its counters in :attr:`last_stats`."""
        self.last_stats = None
        seg, self.last_stats = segment_case(case, self.engine, options or self.options(case), progress)
        return seg

    def segment(self, image, boxes, *, spacing=None, **options) -> np.ndarray:
        """The label map of one case given as arrays: a 2D image (H, W) or (H, W, 3) with boxes
        (N, 4), or a volume (D, H, W) with boxes (N, 6); ``options`` as :meth:`options` (``mode_3d=``,
        ``zoom=``, ...).  The same map the command line writes for the same case and options."""
        case = case_from_arrays(image, boxes, spacing)
        return self.segment_case(case, self.options(case, **options))

    def set_image(self, image) -> "PromptSession":
        """Encode one 2D image (H, W) or (H, W, 3), or one slice, for :meth:`PromptSession.predict`."""
        case = case_from_arrays(image, np.zeros((0, 4), np.int64))
        engine = self.engine
        plan = case_plan(case, engine, Options(guard=self.precision == "auto"))     # the encoder a 2D case runs
        tensor, geo = image_to_tensor(case.image)
        stats = Stats()
        session = ImageSession(engine, 1, stats).set_image(engine.encode_with(plan.encoder if plan else engine.encoder,
                                                                              tensor))
        return PromptSession(session, geo, case.image.shape[:2], stats)


class PromptSession:
    """One encoded image, decoded box by box (:meth:`Segmenter.set_image`)."""

    def __init__(self, session: ImageSession, geo, shape: tuple[int, int], stats: Stats):
        self._session, self._geo, self.shape, self.stats = session, geo, shape, stats

    def predict(self, box) -> tuple[np.ndarray, float]:
        """(boolean mask of the image's (H, W), the decoder's predicted IoU) for ``box`` =
        [x0, y0, x1, y1] in the image's pixels (inclusive), as the command line decodes it."""
        height, width = self.shape
        boxes, _ = check_boxes(np.asarray(box).reshape(1, 4), width, height, None)
        logits, iou = self._session.decode(boxes_to_model(boxes, self._geo), with_iou=True)
        h, w = self._geo.resized                          # the logits' valid window
        return box_mask(logits[0, 0, :h, :w], height, width), float(iou[0])
