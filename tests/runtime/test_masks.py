"""Region-limited up-sampling is exactly full up-sampling; overlaps go to the most confident mask."""
import cv2
import numpy as np
import pytest

from qmedsam.image.masks import confidence_map, paste_mask, upsample_full
from qmedsam.image.preprocess import Geometry, boxes_to_model, image_to_tensor, logits_to_mask


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
    paste_mask(seg, crop, 7, confidence_map(seg.shape))
    np.testing.assert_array_equal(seg == 7, upsample_full(crop, h, w) > 0)


def test_full_upsampling_matches_opencv():
    rng = np.random.default_rng(1)
    crop = rng.normal(0, 1, (200, 150)).astype(np.float32)
    ours = upsample_full(crop, 1000, 750)
    ref = cv2.resize(crop, (750, 1000), interpolation=cv2.INTER_LINEAR)
    assert np.abs(ours - ref).max() < 1e-3
    assert ((ours > 0) != (ref > 0)).mean() < 1e-4


def test_where_masks_overlap_the_higher_logit_wins_in_any_paste_order():
    a = np.full((8, 8), -1, np.float32); a[1:6, 1:6] = 1; a[4:6, 4:6] = 3
    b = np.full((8, 8), -1, np.float32); b[3:8, 3:8] = 2
    results = []
    for order in ((a, 1), (b, 2)), ((b, 2), (a, 1)):
        seg, best = np.zeros((8, 8), np.uint8), confidence_map((8, 8))
        for crop, label in order:
            paste_mask(seg, crop, label, best)
        results.append(seg)
    np.testing.assert_array_equal(*results)
    s = results[0]
    assert s[4, 4] == 1 and s[3, 3] == 2 and s[1, 1] == 1 and s[7, 7] == 2 and s[0, 0] == 0


def test_a_small_structure_inside_a_large_one_keeps_its_label():
    """The case that motivated the rule: an organ's box and mask contain a smaller structure's; the
    large mask's logit there is weak, the small one's strong, so the small one keeps its pixels
    even when the large box comes later (the earlier rule, later box wins, erased it)."""
    organ = np.full((64, 64), -4, np.float32); organ[4:60, 4:60] = 2.0
    vessel = np.full((64, 64), -4, np.float32); vessel[28:36, 28:36] = 6.0
    organ[28:36, 28:36] = 0.5                    # the decoder is unsure the vessel is organ
    seg, best = np.zeros((256, 256), np.uint8), confidence_map((256, 256), np.float16)
    paste_mask(seg, vessel, 1, best)
    paste_mask(seg, organ, 2, best)
    assert (seg == 1).sum() > 0.9 * (8 * 4) ** 2 and (seg == 2).sum() > 0.8 * (56 * 4) ** 2


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
