"""The numpy resizing of the runtime equals OpenCV's bit for bit (OpenCV is a test-only dependency)."""
import numpy as np
import pytest

from qmedsam.preprocess import Geometry
from qmedsam.resize import resize_area, resize_nearest

cv2 = pytest.importorskip("cv2")


def _sizes(rng, n, lo, hi):
    for _ in range(n):
        h, w = (int(v) for v in rng.integers(lo, hi, size=2))
        yield h, w, Geometry(h, w).resized


@pytest.mark.parametrize("channels", [3, None])
def test_area_shrinking_matches_opencv(channels):
    rng = np.random.default_rng(0 if channels else 1)
    for h, w, (nh, nw) in _sizes(rng, 30, 257, 1400):
        shape = (h, w, channels) if channels else (h, w)
        img = rng.integers(0, 256, size=shape, dtype=np.uint8)
        np.testing.assert_array_equal(resize_area(img, nw, nh),
                                      cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA), err_msg=str((h, w)))


@pytest.mark.parametrize("h,w", [(512, 512), (768, 768), (1024, 512), (1024, 256), (600, 300), (256, 256),
                                 (256, 100), (2560, 1920)])
def test_area_integer_factors_and_identity_match_opencv(h, w):
    img = np.random.default_rng(h + w).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    nh, nw = Geometry(h, w).resized
    np.testing.assert_array_equal(resize_area(img, nw, nh), cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA))


def test_area_enlarging_matches_opencv():
    rng = np.random.default_rng(2)
    for h, w, (nh, nw) in list(_sizes(rng, 30, 3, 256)) + [(128, 128, (256, 256)), (34, 128, (68, 256))]:
        img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        np.testing.assert_array_equal(resize_area(img, nw, nh),
                                      cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA), err_msg=str((h, w)))


def test_smooth_real_like_images_match_too():
    y, x = np.mgrid[0:700, 0:900]
    img = (127 + 120 * np.sin(x / 37.0) * np.cos(y / 23.0)).astype(np.uint8)
    for size in [(256, 199), (100, 80)]:
        np.testing.assert_array_equal(resize_area(img, *size), cv2.resize(img, size, interpolation=cv2.INTER_AREA))


def test_nearest_matches_opencv():
    rng = np.random.default_rng(3)
    for h, w, (nh, nw) in list(_sizes(rng, 20, 3, 1000)):
        m = rng.integers(0, 2, size=(h, w), dtype=np.uint8)
        np.testing.assert_array_equal(resize_nearest(m, nw, nh),
                                      cv2.resize(m, (nw, nh), interpolation=cv2.INTER_NEAREST), err_msg=str((h, w)))
