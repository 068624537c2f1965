"""The successors' case files: told apart by their keys, read without running pickled code, and each
bad input refused in one line."""
import os
import pickle

import numpy as np
import pytest

from benchmarks.prompt_cases import object_array, recist_from_labels, round1_boxes
from qmedsam.cases.read import CaseError, load_case, peek_boxes


def _write(tmp_path, name, **arrays):
    p = tmp_path / name
    np.savez(p, **arrays)
    return p


def _volume():
    labels = np.zeros((8, 40, 50), np.uint8)
    labels[2:6, 10:20, 12:25] = 1
    labels[4:7, 25:35, 30:45] = 2
    return (labels * 100).astype(np.uint8), labels


class RunsCode:
    """Pickles to a call of os.system: what a hostile case file carries."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_recist_case_is_a_volume_whatever_its_name(tmp_path):
    image, labels = _volume()
    case = load_case(_write(tmp_path, "CT_Lesion_FLARE23Ts_0007.npz", imgs=image, spacing=np.array([2.0, 1, 1]),
                            recist=recist_from_labels(labels)))
    assert case.is_3d and case.kind == "recist" and [lesion.label for lesion in case.prompts] == [1, 2]
    assert case.label_shape == image.shape and case.label_dtype == np.uint8
    assert case.boxes.shape == (2, 6)


def test_interactive_round_reads_pickled_dicts_of_numpy_integers(tmp_path):
    image, labels = _volume()
    boxes = [{k: np.int64(v) for k, v in b.items()} for b in round1_boxes(labels)]
    prev = labels.copy()
    clicks = object_array([{"fg": [[np.int64(3), np.int64(15), np.int64(18)]], "bg": []}, {"fg": [], "bg": []}])
    path = _write(tmp_path, "CT_AbdTumor_0001.npz", imgs=image, spacing=np.array([1.0, 1, 1]),
                  boxes=object_array(boxes), clicks=clicks, clicks_order=object_array([["fg"], []]),
                  prev_pred=prev)
    case = load_case(path)
    assert case.kind == "interactive" and case.prompts.classes == 2
    assert case.prompts.newest(0) == ("fg", (3, 15, 18)) and case.prompts.newest(1) is None
    assert peek_boxes(path) is None                 # planning never unpickles


def test_a_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path):
    image, _ = _volume()
    marker = tmp_path / "ran"
    hostile = np.empty(1, object)
    hostile[0] = RunsCode(marker)
    path = tmp_path / "CT_Evil_0001.npz"
    np.savez(path, imgs=image, clicks=hostile)
    assert b"system" in pickle.dumps(hostile)
    with pytest.raises(CaseError) as e:
        load_case(path)
    assert "refused" in str(e.value) and "posix.system" in str(e.value) and "\n" not in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize("arrays,reason", [
    (dict(recist=np.zeros((8, 40, 50), np.uint8)), "recist is empty"),
    (dict(recist=np.pad(np.ones((2, 1, 5), np.uint8), ((3, 3), (5, 34), (5, 40)))), "drawn on 2 slices"),
    (dict(recist=np.zeros((8, 40, 49), np.uint8)), "recist has shape"),
    (dict(clicks=object_array([{"fg": [[3, 15, 99]], "bg": []}]), clicks_order=object_array([["fg"]]),
          prev_pred=np.zeros((8, 40, 50), np.uint8)), "lies outside the volume"),
    (dict(clicks=object_array([{"fg": [[3, 15]], "bg": []}])), "not three indices"),
    (dict(boxes=object_array([{"z_min": 1, "z_max": 3}])), "lacks z_mid"),
    (dict(boxes=object_array([{"z_min": 1, "z_max": 30, "z_mid": 2, "z_mid_x_min": 1, "z_mid_y_min": 1,
                               "z_mid_x_max": 5, "z_mid_y_max": 5}])), "does not fit 8 slices"),
    (dict(boxes=object_array(round1_boxes(_volume()[1])), prev_pred=np.zeros((8, 40, 40), np.uint8),
          clicks=object_array([{"fg": [], "bg": []}] * 2)), "prev_pred has shape"),
])
def test_bad_successor_inputs_get_one_line(tmp_path, arrays, reason):
    image, _ = _volume()
    with pytest.raises(CaseError) as e:
        load_case(_write(tmp_path, "CT_Case_0001.npz", imgs=image, **arrays))
    assert reason in str(e.value) and "\n" not in str(e.value)


def test_a_2024_case_still_needs_the_3d_prefix(tmp_path):
    image, labels = _volume()
    case = load_case(_write(tmp_path, "2DBox_X_1.npz", imgs=image[0], boxes=np.array([[1, 2, 10, 12]])))
    assert case.kind == "box" and not case.is_3d
