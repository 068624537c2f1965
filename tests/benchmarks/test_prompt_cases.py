"""The prompts bench-prompts makes from ground truth follow the organisers' rules."""
import numpy as np

from benchmarks.bench_prompts import auc
from benchmarks.prompt_cases import next_click, recist_from_labels, round1_boxes
from qmedsam.cases.recist import parse_recist


def _two_objects():
    labels = np.zeros((9, 40, 40), np.uint8)
    labels[2:5, 5:10, 5:25] = 1            # longest on every slice: the diagonal of 5 x 20
    labels[4, 5:10, 5:25] = 1
    labels[6:8, 20:30, 20:30] = 2
    labels[7, 20:34, 20:34] = 2            # its largest slice
    return labels


def test_recist_lines_lie_on_each_objects_largest_slice_with_its_longest_diameter():
    labels = _two_objects()
    recist = recist_from_labels(labels)
    lesions = {lesion.label: lesion for lesion in parse_recist(recist, labels.shape)}
    assert lesions[2].z == 7 and abs(lesions[2].length - np.hypot(13, 13)) < 1e-6
    assert lesions[1].z in (2, 3, 4) and abs(lesions[1].length - np.hypot(19, 4)) < 1e-6


def test_round1_boxes_hold_the_middle_slice_and_the_z_range():
    boxes = round1_boxes(_two_objects())
    assert (boxes[1]["z_min"], boxes[1]["z_max"], boxes[1]["z_mid"]) == (6, 7, 6)
    assert boxes[0]["z_mid_x_min"] <= 5 and boxes[0]["z_mid_x_max"] >= 24


def test_the_next_click_is_at_the_heart_of_the_largest_error():
    gt = np.zeros((11, 30, 30), np.uint8)
    gt[2:9, 5:25, 5:25] = 1
    missed = gt.copy()
    missed[2:9, 5:25, 5:15] = 0
    kind, (z, y, x) = next_click(gt, missed, 1)
    assert kind == "fg" and z == 5 and 5 <= x < 15
    over = gt.copy()
    over[9:11] = 1
    kind, (z, y, x) = next_click(gt, over, 1)
    assert kind == "bg" and z in (9, 10)
    assert next_click(gt, gt, 1) is None


def test_auc_is_the_trapezoid_over_the_five_click_rounds():
    assert auc([0.1, 0.5, 0.5, 0.5, 0.5, 0.5]) == 2.0
    assert auc([0.0, 1.0, 1.0, 1.0, 1.0, 1.0]) == 4.0
