"""Case loading and validation: every bad input gets a one-line, named reason or a sane repair."""
import numpy as np
import pytest

from qmedsam.cases.read import CaseError, label_dtype, load_case


def _write(tmp_path, name, **arrays):
    p = tmp_path / name
    np.savez(p, **arrays)
    return p


def test_valid_2d_and_3d(tmp_path):
    c = load_case(_write(tmp_path, "2DBox_X_1.npz", imgs=np.zeros((20, 30, 3), np.uint8),
                         boxes=np.array([[1, 2, 10, 12]])))
    assert not c.is_3d and c.label_shape == (20, 30) and c.boxes.dtype == np.int64
    c = load_case(_write(tmp_path, "3DBox_X_1.npz", imgs=np.zeros((5, 20, 30), np.uint8),
                         boxes=np.array([[1, 2, 0, 10, 12, 4]]), spacing=np.array([2.0, 1, 1])))
    assert c.is_3d and c.label_shape == (5, 20, 30)


def test_grayscale_2d_accepted(tmp_path):
    c = load_case(_write(tmp_path, "2DBox_X_1.npz", imgs=np.zeros((20, 30), np.uint8),
                         boxes=np.array([[1, 2, 10, 12]])))
    assert c.image.shape == (20, 30) and c.label_shape == (20, 30)


def test_boxes_outside_are_clipped(tmp_path):
    c = load_case(_write(tmp_path, "2DBox_X_1.npz", imgs=np.zeros((20, 30, 3), np.uint8),
                         boxes=np.array([[-5, 2, 40, 25]])))
    assert c.boxes.tolist() == [[0, 2, 29, 19]] and c.notes


def test_zero_boxes_is_not_an_error(tmp_path):
    c = load_case(_write(tmp_path, "2DBox_X_1.npz", imgs=np.zeros((20, 30, 3), np.uint8),
                         boxes=np.zeros((0, 4))))
    assert c.boxes.shape == (0, 4)


@pytest.mark.parametrize("name,arrays,reason", [
    ("2DBox_X_1.npz", dict(imgs=np.zeros((20, 30, 3), np.uint8)), "missing key(s) boxes"),
    ("2DBox_X_1.npz", dict(boxes=np.zeros((1, 4))), "missing key(s) imgs"),
    ("2DBox_X_1.npz", dict(imgs=np.zeros((20, 30, 3), np.uint8), boxes=np.zeros((1, 6))), "expected (N, 4)"),
    ("3DBox_X_1.npz", dict(imgs=np.zeros((20, 30, 3, 2), np.uint8), boxes=np.zeros((1, 6))), "expected (D, H, W)"),
    ("2DBox_X_1.npz", dict(imgs=np.zeros((20, 30, 4), np.uint8), boxes=np.zeros((1, 4))), "expected (H, W, 3)"),
    ("2DBox_X_1.npz", dict(imgs=np.full((20, 30, 3), np.nan), boxes=np.zeros((1, 4))), "NaN"),
    ("2DBox_X_1.npz", dict(imgs=np.zeros((20, 30, 3), np.uint8), boxes=np.array([[1, 2, np.nan, 4]])), "NaN"),
    ("2DBox_X_1.npz", dict(imgs=np.full((20, 30, 3), 1000.0), boxes=np.zeros((1, 4))), "expected uint8"),
    ("2DBox_X_1.npz", dict(imgs=np.zeros((20, 30, 3), np.uint8), boxes=np.array([[10, 2, 5, 4]])), "max < min"),
    ("2DBox_X_1.npz", dict(imgs=np.zeros((20, 30, 3), np.uint8), boxes=np.array([[40, 2, 50, 4]])), "outside the image"),
    ("3DBox_X_1.npz", dict(imgs=np.zeros((5, 20, 30), np.uint8), boxes=np.array([[1, 2, 7, 10, 12, 9]])), "z range outside"),
    ("3DBox_X_1.npz", dict(imgs=np.zeros((5, 20, 30), np.uint8), boxes=np.array([[1, 2, 0, 10, 12, 3]]),
                           spacing=np.array([1.0, -1, 1])), "spacing"),
])
def test_bad_inputs_are_refused_with_a_reason(tmp_path, name, arrays, reason):
    with pytest.raises(CaseError) as e:
        load_case(_write(tmp_path, name, **arrays))
    assert reason in str(e.value) and "\n" not in str(e.value)


def test_unreadable_file(tmp_path):
    p = tmp_path / "2DBox_X_1.npz"
    p.write_bytes(b"not a zip file at all")
    with pytest.raises(CaseError, match="unreadable"):
        load_case(p)


def test_label_dtype_holds_all_labels():
    assert label_dtype(255) == np.uint8 and label_dtype(256) == np.uint16
