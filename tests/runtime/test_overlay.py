"""Overlay PNGs: written atomically with OpenCV, colours in RGB order, boxes drawn where they are."""
import cv2
import numpy as np

from qmedsam.cases.overlay import TILE, case_overlay, draw, write_png


def test_png_keeps_rgb_order_and_leaves_no_temporary_file(tmp_path):
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0] = 200                       # red
    write_png(tmp_path / "a.png", rgb)
    back = cv2.imread(str(tmp_path / "a.png"))          # OpenCV reads BGR
    assert back.shape == (4, 6, 3) and (back[..., 2] == 200).all() and not back[..., :2].any()
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_tile_is_scaled_to_the_tile_size_with_labels_blended(tmp_path):
    image = np.full((100, 50), 80, np.uint8)
    seg = np.zeros((100, 50), np.uint8)
    seg[10:40, 5:30] = 1
    tile = draw(image, seg, np.array([[5, 10, 29, 39]]))
    assert tile.shape == (TILE, TILE // 2, 3)
    assert not np.array_equal(tile[100, 60], tile[300, 60])          # inside the label vs background
    volume = np.repeat(image[None], 5, axis=0)
    case_overlay(volume, np.repeat(seg[None], 5, axis=0), np.array([[5, 10, 1, 29, 39, 3]]), True,
                 tmp_path / "v.png")
    assert cv2.imread(str(tmp_path / "v.png")).shape == (TILE, TILE, 3)          # one tile of the montage
