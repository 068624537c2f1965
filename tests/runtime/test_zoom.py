"""Zoom for small boxes: crop planning, sparse crops cut and packed into shared canvases, on
synthetic cases; each canvas encoded once; and the gain on real nuclei images."""
import numpy as np
import pytest

from conftest import MODELS, CountingModel
from qmedsam.cases.read import Case
from qmedsam.model.spec import ENCODER
from qmedsam.precision.policy import Plan
from qmedsam.segment.case_run import segment_case
from qmedsam.segment.options import SegmentOptions as Options

INT8 = Plan(ENCODER.name, False, "")
from qmedsam.image.preprocess import boxes_to_canvas, boxes_to_model, canvas_to_tensor, image_to_tensor, Geometry
from qmedsam.image.zoom import (CONTEXT, SMALL_BOXES_PER_PASS, SMALL_PX, SPARSE_TILE, SPARSE_ZOOM, Crop, Placed, Tile,
                          box_sides, fit_tiles, pack, plan_crops, zoom_canvases)


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


def test_a_crop_full_of_boxes_stays_whole_and_a_sparse_one_is_cut_to_its_boxes():
    boxes = np.concatenate([squares([[20, 20], [100, 100], [20, 100], [100, 20]], 12),   # spread over the cell
                            squares([[300, 300]], 10)])                                   # alone in its cell
    dense = Crop(0, 0, 128, 128, (0, 1, 2, 3))
    sparse = Crop(256, 256, 384, 384, (4,))
    whole, cut = fit_tiles([dense, sparse], boxes)
    assert (whole.y0, whole.x0, whole.y1, whole.x1) == (0, 0, 128, 128) and whole.size == (256, 256)
    assert whole.zoom == pytest.approx(256 / 128)
    assert cut.zoom == pytest.approx(256 / 128 * SPARSE_ZOOM)
    pad = int(np.ceil(CONTEXT * 10))
    assert (cut.y0, cut.x0, cut.y1, cut.x1) == (295 - pad, 295 - pad, 305 + pad, 305 + pad)
    assert max(cut.size) / SPARSE_ZOOM <= SPARSE_TILE
    edge = fit_tiles([Crop(0, 0, 128, 128, (0,))], squares([[4, 4]], 6))[0]             # clipped to its crop
    assert edge.y0 == 0 and edge.x0 == 0


def test_packed_tiles_fill_canvases_without_overlap():
    rng = np.random.default_rng(1)
    tiles = [Tile(0, 0, int(h), int(w), 1.0, (k,)) for k, (h, w) in enumerate(rng.integers(10, 200, (40, 2)))]
    tiles.append(Tile(0, 0, 256, 256, 1.0, (40,)))
    canvases = pack(tiles)
    placed = [p for c in canvases for p in c]
    assert sorted(p.tile.boxes[0] for p in placed) == list(range(41))          # every tile exactly once
    area = sum(t.size[0] * t.size[1] for t in tiles)
    assert len(canvases) < len(tiles) and len(canvases) >= area / 256 ** 2
    for c in canvases:
        used = np.zeros((256, 256), int)
        for p in c:
            h, w = p.tile.size
            assert 0 <= p.y and p.y + h <= 256 and 0 <= p.x and p.x + w <= 256
            used[p.y:p.y + h, p.x:p.x + w] += 1
        assert used.max() == 1
    assert len(pack([Tile(0, 0, 128, 128, 1.0, (k,)) for k in range(4)])) == 1
    with pytest.raises(ValueError, match="larger than"):
        pack([Tile(0, 0, 300, 10, 1.0, (0,))])


@pytest.mark.parametrize("n", [1, 7, 9, 40])
def test_at_most_one_canvas_per_few_small_boxes_and_tiles_shrink_to_fit(n):
    rng = np.random.default_rng(n)
    centres = rng.permutation(np.stack(np.meshgrid(np.arange(8), np.arange(8)), -1).reshape(-1, 2))[:n] * 300 + 100
    boxes = squares(centres, 16)                              # 1.7 px at model input: each its own crop
    crops, _ = plan_crops(2400, 2400, boxes, max_crops=64)
    canvases, plain = zoom_canvases(2400, 2400, boxes, max_crops=64)
    assert len(plain) == 0 and len(crops) == n
    assert 1 <= len(canvases) <= -(-n // SMALL_BOXES_PER_PASS)
    placed = [p for c in canvases for p in c]
    assert sorted(i for p in placed for i in p.tile.boxes) == list(range(n))
    full = {t.boxes: t for t in fit_tiles(crops, boxes)}
    for p in placed:
        t = p.tile
        assert t.zoom <= full[t.boxes].zoom
        b = boxes[list(t.boxes)]
        assert (b[:, :2] >= [t.x0, t.y0]).all() and (b[:, 2:] < [t.x1, t.y1]).all()
        assert p.y + t.size[0] <= 256 and p.x + t.size[1] <= 256
    shrunk = any(p.tile.zoom < full[p.tile.boxes].zoom for p in placed)
    assert shrunk == (len(pack(list(full.values()))) > -(-n // SMALL_BOXES_PER_PASS))


def test_dense_crops_over_the_pass_budget_are_zoomed_less_to_share_a_canvas():
    boxes = squares([[180, 180], [246, 246], [1880, 1880], [1946, 1946]], 16)   # two cells, two boxes each
    crops, _ = plan_crops(2400, 2400, boxes)
    full = fit_tiles(crops, boxes)
    assert len(crops) == 2 and all(max(t.size) == 256 for t in full)           # dense: a canvas each
    (canvas,), _ = zoom_canvases(2400, 2400, boxes)                             # 4 small boxes: one pass
    assert sorted(i for p in canvas for i in p.tile.boxes) == [0, 1, 2, 3]
    for p in canvas:
        whole = next(t for t in full if t.boxes == p.tile.boxes)
        assert (p.tile.y0, p.tile.x0, p.tile.y1, p.tile.x1) == (whole.y0, whole.x0, whole.y1, whole.x1)
        assert 0.4 < p.tile.zoom / whole.zoom < 0.6


def test_a_canvas_of_one_whole_crop_is_that_crop_as_the_plain_path_sees_it():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    crop = Crop(37, 51, 237, 171, (0,))                     # 200 x 120
    (tile,) = fit_tiles([crop], np.array([[51, 37, 170, 236]]))
    p = Placed(tile, 0, 0)
    window = image[crop.y0:crop.y1, crop.x0:crop.x1]
    np.testing.assert_array_equal(canvas_to_tensor(image, [p]), image_to_tensor(window)[0])
    local = np.array([[3, 5, 60, 90], [0, 0, 119, 199]])
    np.testing.assert_array_equal(boxes_to_canvas(local + [51, 37, 51, 37], p),
                                  boxes_to_model(local, Geometry(*crop.shape)))


def test_tiles_share_one_normalisation_and_sit_where_placed():
    image = np.zeros((100, 100), np.uint8)
    image[:50] = 40
    image[50:] = 200
    a, b = Tile(0, 0, 20, 20, 2.0, (0,)), Tile(60, 60, 80, 80, 2.0, (1,))
    x = canvas_to_tensor(image, [Placed(a, 0, 0), Placed(b, 10, 40)])
    assert x.shape == (1, 3, 256, 256)
    assert (x[0, :, :40, :40] == 0).all() and (x[0, :, 10:50, 40:80] == 1).all()     # 40 -> 0, 200 -> 1
    x[0, :, :40, :40] = x[0, :, 10:50, 40:80] = 7
    assert (x[x != 7] == 0).all()                                                    # zero elsewhere
    box = boxes_to_canvas(np.array([[65, 62, 70, 75]]), Placed(b, 10, 40))
    np.testing.assert_array_equal(box[0, 0], [40 + 10, 10 + 4, 40 + 20, 10 + 30])


@pytest.fixture(scope="module")
def engine():
    from qmedsam.model.model import Model

    return Model(MODELS)


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
    counting = CountingModel(engine)
    seg, stats = segment_case(case, counting, INT8, Options(zoom_crops=8))
    assert stats.slices_encoded == 1 and 1 <= stats.crops_encoded <= 8
    assert len(counting.encoded) == len(set(counting.encoded)) == stats.passes
    assert seg.shape == image.shape[:2] and seg.max() == len(boxes) + 1
    assert set(np.unique(seg)) <= set(range(len(boxes) + 2))


def test_zoom_raises_dice_on_small_real_nuclei(engine, tiled):
    from qmedsam_eval.metrics import case_scores

    image, labels, boxes = tiled
    case = Case("2DBox_Micro_0001.npz", image, boxes)
    plain, _ = segment_case(case, engine, INT8, Options(zoom_crops=0))
    zoomed, stats = segment_case(case, engine, INT8, Options(zoom_crops=12))
    assert stats.crops_encoded > 0
    d_plain, d_zoom = case_scores(labels, plain)[0], case_scores(labels, zoomed)[0]
    assert d_zoom > d_plain + 0.2, (d_plain, d_zoom)


def test_scattered_small_boxes_share_encoder_passes_and_keep_their_gain(engine):
    """The 512x512 nuclei sample: its few small boxes sit alone in their crops; packed, they cost
    fewer encoder passes than crops, and still score above the plain path."""
    from qmedsam.cases.read import load_case
    from qmedsam_eval.metrics import case_scores
    from conftest import ROOT

    case = load_case(ROOT / "samples" / "inputs" / "2DBox_Microscope_0003.npz")
    gt = np.load(ROOT / "samples" / "gts" / "2DBox_Microscope_0003.npz")["gts"]
    crops, _ = plan_crops(*case.image.shape[:2], case.boxes)
    counting = CountingModel(engine)
    zoomed, stats = segment_case(case, counting, INT8, Options())
    plain, _ = segment_case(case, engine, INT8, Options(zoom_crops=0))
    assert 0 < stats.crops_encoded < len(crops)
    assert len(counting.encoded) == len(set(counting.encoded)) == stats.passes
    assert case_scores(gt, zoomed)[0] > case_scores(gt, plain)[0]
