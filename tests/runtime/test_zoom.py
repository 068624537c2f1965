"""Zoom for small boxes: crop planning on synthetic cases, each crop encoded once, and the gain
on a real tiled nuclei image."""
import numpy as np
import pytest

from conftest import MODELS, CountingEngine
from qmedsam.cases import Case
from qmedsam.segment import Options, segment_case
from qmedsam.zoom import SMALL_PX, box_sides, plan_crops


def squares(centres, side):
    c = np.asarray(centres)
    return np.concatenate([c - side // 2, c - side // 2 + side - 1], axis=1)


def test_large_boxes_stay_on_the_plain_path():
    boxes = squares([[100, 100], [300, 200]], 120)          # 120 px of 512: 60 px at model input
    crops, plain = plan_crops(512, 512, boxes)
    assert crops == [] and plain.tolist() == [0, 1]
    assert plan_crops(512, 512, squares([[100, 100]], 4), max_crops=0)[0] == []     # zoom off


def test_each_small_box_lies_whole_in_exactly_one_crop_within_the_budget():
    rng = np.random.default_rng(0)
    small = squares(rng.integers(20, 2500, (200, 2)), 20)          # 2 px at model input in 2560
    big = squares([[1000, 1000]], 600)
    boxes = np.concatenate([small, big])
    for budget in (3, 12, 24):
        crops, plain = plan_crops(2560, 2560, boxes, max_crops=budget)
        assert 0 < len(crops) <= budget and plain.tolist() == [200]
        owners = [i for c in crops for i in c.boxes]
        assert sorted(owners) == list(range(200))                    # each small box exactly once
        for c in crops:
            b = boxes[list(c.boxes)]
            assert (b[:, 0] >= c.x0).all() and (b[:, 1] >= c.y0).all()
            assert (b[:, 2] < c.x1).all() and (b[:, 3] < c.y1).all()
            assert 0 <= c.y0 < c.y1 <= 2560 and 0 <= c.x0 < c.x1 <= 2560
    scale = 256 / 2560
    assert (box_sides(small) * scale < SMALL_PX).all()


@pytest.fixture(scope="module")
def engine():
    from qmedsam.engine import Engine

    return Engine(MODELS)


@pytest.fixture(scope="module")
def tiled():
    from tools.public_data import tiled_nuclei
    from qmedsam_eval.label_boxes import boxes_from_labels

    t = tiled_nuclei(1024, 1536, 60, seed=3)
    return t.image, t.labels, boxes_from_labels(t.labels)


def test_each_crop_is_encoded_once_and_labels_follow_the_boxes(engine, tiled):
    image, _, boxes = tiled
    big = np.array([[100, 100, 700, 600]])                               # stays on the plain path
    case = Case("2DBox_Micro_0001.npz", image, np.concatenate([boxes, big]))
    counting = CountingEngine(engine)
    seg, stats = segment_case(case, counting, Options(zoom_crops=8))
    assert stats.slices_encoded == 1 and 1 <= stats.crops_encoded <= 8
    assert len(counting.encoded) == len(set(counting.encoded)) == stats.encoder_passes
    assert seg.shape == image.shape[:2] and seg.max() == len(boxes) + 1
    assert set(np.unique(seg)) <= set(range(len(boxes) + 2))


def test_zoom_raises_dice_on_small_real_nuclei(engine, tiled):
    from qmedsam_eval.metrics import case_scores

    image, labels, boxes = tiled
    case = Case("2DBox_Micro_0001.npz", image, boxes)
    plain, _ = segment_case(case, engine, Options(zoom_crops=0))
    zoomed, stats = segment_case(case, engine, Options(zoom_crops=12))
    assert stats.crops_encoded > 0
    d_plain, d_zoom = case_scores(labels, plain)[0], case_scores(labels, zoomed)[0]
    assert d_zoom > d_plain + 0.2, (d_plain, d_zoom)
