"""Region-limited up-sampling is exactly full up-sampling; pasting follows the overwrite rule."""
import cv2
import numpy as np
import pytest

from qmedsam.masks import paste_mask, upsample_full
from qmedsam.preprocess import Geometry, boxes_to_model, image_to_tensor, logits_to_mask


@pytest.mark.parametrize("seed", range(40))
def test_window_paste_equals_full_upsampling(seed):
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(16, 2500, 2))
    crop = np.full((int(rng.integers(4, 257)), int(rng.integers(4, 257))), -2.0, np.float32)
    if seed % 4:  # a compact structure with a soft edge
        y, x = rng.integers(0, crop.shape[0]), rng.integers(0, crop.shape[1])
        crop[y:y + rng.integers(1, 30), x:x + rng.integers(1, 30)] = rng.normal(0.5, 1.0)
    else:         # noise everywhere
        crop = rng.normal(-0.5, 1, crop.shape).astype(np.float32)
    seg = np.zeros((h, w), np.uint8)
    paste_mask(seg, crop, 7)
    np.testing.assert_array_equal(seg == 7, upsample_full(crop, h, w) > 0)


def test_full_upsampling_matches_opencv():
    rng = np.random.default_rng(1)
    crop = rng.normal(0, 1, (200, 150)).astype(np.float32)
    ours = upsample_full(crop, 1000, 750)
    ref = cv2.resize(crop, (750, 1000), interpolation=cv2.INTER_LINEAR)
    assert np.abs(ours - ref).max() < 1e-3
    assert ((ours > 0) != (ref > 0)).mean() < 1e-4


def test_later_box_wins_in_any_paste_order():
    a = np.full((8, 8), -1, np.float32); a[1:6, 1:6] = 1
    b = np.full((8, 8), -1, np.float32); b[3:8, 3:8] = 1
    s1 = np.zeros((8, 8), np.uint8); paste_mask(s1, a, 1); paste_mask(s1, b, 2)
    s2 = np.zeros((8, 8), np.uint8); paste_mask(s2, b, 2); paste_mask(s2, a, 1)
    np.testing.assert_array_equal(s1, s2)
    assert s1[4, 4] == 2 and s1[1, 1] == 1 and s1[7, 7] == 2 and s1[0, 0] == 0


def test_preprocessing_follows_the_baseline():
    img = np.arange(300 * 200 * 3, dtype=np.uint32).reshape(300, 200, 3) % 251
    x, geo = image_to_tensor(img.astype(np.uint8))
    assert x.shape == (1, 3, 256, 256) and x.dtype == np.float32
    assert geo.resized == (256, int(200 * 256 / 300 + 0.5))
    assert x[..., :, geo.resized[1]:].max() == 0          # right padding
    assert np.isclose(x.max(), 1) and np.isclose(x[..., :geo.resized[1]].min(), 0)
    b = boxes_to_model(np.array([[10, 20, 199, 299]]), geo)
    assert b.shape == (1, 1, 4) and b[0, 0].tolist() == [int(10 * 256 / 300), int(20 * 256 / 300),
                                                          int(199 * 256 / 300), int(299 * 256 / 300)]
    logits = np.full((256, 256), -1, np.float32)
    assert logits_to_mask(logits, Geometry(300, 200)).shape == (300, 200)
