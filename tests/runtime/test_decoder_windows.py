"""Each box's decoder window: the smallest that holds the box and its margin, or the whole grid."""
import numpy as np
import pytest

from qmedsam.model.windows import GRID, SIZES, cells, plan_windows, window_origin


@pytest.mark.parametrize("seed", range(5))
def test_a_window_holds_its_box_and_margin_within_the_grid(seed):
    rng = np.random.default_rng(seed)
    for _ in range(200):
        x0, y0 = rng.uniform(0, 250, 2)
        x1, y1 = x0 + rng.uniform(1, 120), y0 + rng.uniform(1, 120)
        box = np.array([x0, y0, min(x1, 256), min(y1, 256)])
        margin = int(rng.integers(0, 24))
        for size in SIZES:
            origin = window_origin(box, size, margin)
            lo = np.maximum(box[[1, 0]] - margin, 0)
            hi = np.minimum(box[[3, 2]] + margin, 256)
            if origin is None:                      # only where box + margin is wider than the window
                assert (hi - lo).max() > 4 * size - 8
                continue
            start = 4 * np.array(origin)
            assert (start >= 0).all() and (start + 4 * size <= 4 * GRID).all()
            assert (start <= lo).all() and (start + 4 * size >= hi).all()


def test_boxes_are_grouped_by_the_smallest_window_that_holds_them():
    boxes = np.array([[[10, 10, 30, 30]], [[0, 0, 256, 256]], [[100, 100, 180, 170]], [[5, 200, 20, 230]]], float)
    groups = {size: (list(idx), origins) for size, idx, origins in plan_windows(boxes, margin=8)}
    assert groups[16][0] == [0, 3] and groups[32][0] == [2] and groups[None][0] == [1]
    assert sorted(i for g in groups.values() for i in g[0]) == [0, 1, 2, 3]


def test_cells_index_the_window_row_by_row_and_the_whole_grid_without_one():
    c = cells(np.array([[2, 3]]), 2)
    assert c.tolist() == [[[2 * GRID + 3, 2 * GRID + 4], [3 * GRID + 3, 3 * GRID + 4]]]
    full = cells(np.zeros((3, 2), np.int64), None)
    assert full.shape == (3, GRID, GRID) and (full[2].ravel() == np.arange(GRID * GRID)).all()


@pytest.fixture(scope="module")
def engines():
    from conftest import MODELS
    from qmedsam.model.model import Model, ModelSettings

    return (Model(MODELS, ModelSettings(float_ops="f32")),
            Model(MODELS, ModelSettings(float_ops="f32", windows=False)))


def test_windowed_decoding_gives_the_whole_grids_logits_in_each_window_and_no_mask_outside(engines, ct_case):
    """The shipped decoder graphs: small boxes (nuclei, CT structures) decoded over their windows;
    inside a window the logits are the whole grid's, outside they are OUTSIDE, and the masks
    agree with the whole grid's (pooled Dice >= 0.995 at the runtime's margin)."""
    from conftest import SAMPLES
    from qmedsam.cases.read import load_case
    from qmedsam.model.spec import ENCODER
    from qmedsam.model.windows import MARGIN, OUTSIDE
    from qmedsam.image.preprocess import boxes_to_model, image_to_tensor
    from qmedsam_eval.label_boxes import boxes_from_labels, relabel_consecutive

    windowed, whole = engines
    nuclei = load_case(SAMPLES / "inputs" / "2DBox_Microscope_0003.npz")
    slices = [(nuclei.image, nuclei.boxes[:24])] + [
        (ct_case.image[z], boxes_from_labels(relabel_consecutive(ct_case.labels[z]))) for z in (12, 20)]
    both = total = windows = 0
    for image, boxes in slices:
        x, geo = image_to_tensor(image)
        emb, _ = whole.encode(x, ENCODER.name)
        b = boxes_to_model(boxes, geo)
        ref, ref_iou = whole.decode(whole.prepare(emb), b)
        ours, iou = windowed.decode(windowed.prepare(emb), b)
        np.testing.assert_allclose(iou, ref_iou, rtol=1e-5, atol=1e-5)
        for size, idx, origins in plan_windows(b, MARGIN):
            for k, (y, x0) in zip(idx, origins):
                if size is None:
                    np.testing.assert_allclose(ours[k], ref[k], rtol=1e-5, atol=1e-4)
                    continue
                windows += 1
                win = (0, slice(4 * y, 4 * (y + size)), slice(4 * x0, 4 * (x0 + size)))
                np.testing.assert_allclose(ours[k][win], ref[k][win], rtol=1e-4, atol=1e-3)
                outside = np.ones(ours[k].shape, bool)
                outside[win] = False
                assert (ours[k][outside] == OUTSIDE).all()
        both += int(np.logical_and(ours > 0, ref > 0).sum())
        total += int((ours > 0).sum() + (ref > 0).sum())
    assert windows >= 20
    assert 2 * both / total >= 0.995
