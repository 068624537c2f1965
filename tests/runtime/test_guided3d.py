"""The 'guided' 3D mode's rules on synthetic cases, with a scripted stand-in for the model:
clipping to the 3D box, fall-back to the fixed box, the choice by predicted IoU; and the image
predictor's block loop."""
import numpy as np

from conftest import StandIn
from qmedsam.cases.read import Case
from qmedsam.image.predictor import ImagePredictor
from qmedsam.image.preprocess import Geometry
from qmedsam.model.spec import ENCODER
from qmedsam.precision.policy import Plan
from qmedsam.segment.case_run import segment_case
from qmedsam.segment.options import SegmentOptions
from qmedsam.segment.propagate3d import GUIDED_IOU_MARGIN, clip_box, guided_step


def test_clip_box_intersects_and_falls_back_when_disjoint():
    limit = np.array([10, 10, 100, 100], np.float32)
    np.testing.assert_array_equal(clip_box(np.array([0, 50, 60, 120], np.float32), limit), [10, 50, 60, 100])
    np.testing.assert_array_equal(clip_box(np.array([120, 120, 140, 140], np.float32), limit), limit)


class ScriptedEngine(StandIn):
    """Decodes every box to a mask filling the box shrunk by ``shrink`` px (256-space); the
    IoU prediction is ``iou_of(box)``.  Records every decoded box."""

    def __init__(self, iou_of=lambda b: 0.5, shrink=4, empty=lambda b: False):
        super().__init__()
        self.iou_of, self.shrink, self.empty = iou_of, shrink, empty
        self.decoded = []

    def masks(self, embedding, boxes):
        out = np.full((len(boxes), 1, 256, 256), -1.0, np.float32)
        for k, b in enumerate(boxes[:, 0]):
            self.decoded.append(b.copy())
            if not self.empty(b):
                x0, y0, x1, y1 = (int(round(v)) for v in b)
                s = self.shrink
                out[k, 0, y0 + s:y1 - s, x0 + s:x1 - s] = 1.0
        return out, np.array([self.iou_of(b) for b in boxes[:, 0]], np.float32)


GEO = Geometry(256, 256)
FIXED = np.array([[40, 40, 200, 200]], np.float32)


def _step(eng, prompt, seg):
    """One guided step on one slice, with the confidence map of qmedsam.image.masks.paste_mask."""
    predictor = ImagePredictor(eng, 8).set_embedding(None, GEO)
    return guided_step(predictor, prompt, FIXED, np.array([1]), seg, np.zeros(seg.shape, np.float32))


def test_next_prompt_is_the_mask_box_widened_and_clipped():
    seg = np.zeros((256, 256), np.uint8)
    # a prompt sticking out of the fixed box: its mask (columns 24-145, rows 64-145) widened by
    # 20 % of its size per axis, then clipped to the fixed box
    prompt = np.array([[20, 60, 150, 150]], np.float32)
    eng = ScriptedEngine(iou_of=lambda b: 1.0 if b[0] < 40 else 0.0)   # the prompt's mask is pasted
    nxt = _step(eng, prompt, seg)
    np.testing.assert_allclose(nxt[0], [40, 64 - 0.2 * 82, 145 + 0.2 * 122, 145 + 0.2 * 82], atol=1e-4)
    assert seg[64:146, 24:146].all() and seg.sum() == 82 * 122


def test_the_fixed_box_wins_unless_clearly_worse():
    prompt = np.array([[60, 60, 120, 120]], np.float32)
    for prop_iou, fixed_wins in ((0.9, False), (0.5 + GUIDED_IOU_MARGIN / 2, True), (0.2, True)):
        eng = ScriptedEngine(iou_of=lambda b: 0.5 if b[2] - b[0] > 100 else prop_iou)
        seg = np.zeros((256, 256), np.uint8)
        _step(eng, prompt, seg)
        assert len(eng.decoded) == 2                    # propagated prompt and fixed box
        painted = seg.sum()
        assert painted == (152 * 152 if fixed_wins else 52 * 52)


def test_an_identical_prompt_is_decoded_once_and_an_empty_mask_falls_back():
    eng = ScriptedEngine(empty=lambda b: True)
    seg = np.zeros((256, 256), np.uint8)
    nxt = _step(eng, FIXED.copy(), seg)
    assert len(eng.decoded) == 1 and nxt == [None] and not seg.any()


def test_guided_volume_shrinks_prompts_inside_the_3d_box():
    """A 3D box over 5 slices: the middle slice gets the fixed box, later slices propagated prompts
    that never leave the box's xy extent; every slice encoded once."""
    vol = np.zeros((5, 256, 256), np.uint8)
    case = Case("3DBox_Synth_0001.npz", vol, np.array([[40, 40, 0, 200, 200, 4]]))
    # masks 30 px inside their box; the smaller box predicted better: mask widths 100, 80, 52
    eng = ScriptedEngine(iou_of=lambda b: 1.0 - (b[2] - b[0]) / 256, shrink=30)
    seg, stats = segment_case(case, eng, Plan(ENCODER.name, False, ""), SegmentOptions(mode_3d="guided"))
    assert sorted(stats.encoded) == [0, 1, 2, 3, 4]
    assert np.allclose(eng.decoded[0], FIXED[0])                 # middle slice: the fixed box
    for b in eng.decoded:
        assert b[0] >= 40 and b[1] >= 40 and b[2] <= 200 and b[3] <= 200
    widths = [(seg[z] > 0).any(0).sum() for z in range(5)]
    assert widths[2] > widths[3] > widths[4] and widths[2] > widths[1] > widths[0]


def test_a_predictor_refuses_to_decode_before_its_image_is_set():
    import pytest

    from qmedsam.image.predictor import NoImageError

    predictor = ImagePredictor(ScriptedEngine(), 8)
    with pytest.raises(NoImageError, match="before an image is set"):
        predictor.logits(FIXED[:, None, :])
    assert len(predictor.set_embedding(None, GEO).logits(FIXED[:, None, :])) == 1


def test_blocks_hold_at_most_max_boxes_and_count_decoder_calls():
    eng = ScriptedEngine()
    boxes = np.tile(FIXED[:, None, :], (19, 1, 1))
    predictor = ImagePredictor(eng, 8).set_embedding(None, GEO)
    seg = np.zeros((256, 256), np.uint8)
    predictor.paste(boxes, np.arange(1, 20), seg, np.zeros(seg.shape, np.float32))
    assert predictor.ledger.decoder_calls == 3 and predictor.ledger.boxes_decoded == len(eng.decoded) == 19
