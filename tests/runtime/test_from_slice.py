"""Following objects from one slice, and the click rules, on a stand-in model whose masks are the
bright pixels inside the prompt box: what the rules do is checked without the real model's noise."""
import numpy as np

from benchmarks.prompt_cases import object_array, recist_from_labels, round1_boxes
from qmedsam.cases.read import successor_case
from qmedsam.precision.policy import Plan
from qmedsam.segment.case_run import segment_case
from qmedsam.segment.components import label_3d
from tests.conftest import StandIn


class BrightInBox(StandIn):
    """An embedding carries its slice (the model tensor's first channel); a box decodes to the pixels
    above half the slice's range inside the box, with IoU 0.9."""

    def embed(self, tensor, graph):
        return tensor[:, :1].reshape(1, 256, 16, 16).astype(np.float32).copy()

    def masks(self, embedding, boxes):
        image = embedding.reshape(256, 256)
        logits = np.full((len(boxes), 1, 256, 256), -1.0, np.float32)
        for i, (x0, y0, x1, y1) in enumerate(boxes[:, 0]):
            inside = np.zeros((256, 256), bool)
            inside[int(y0):int(y1) + 1, int(x0):int(x1) + 1] = True
            logits[i, 0][inside & (image > 0.5)] = 1.0
        return logits, np.full(len(boxes), 0.9, np.float32)


PLAN = Plan("encoder_float", False, "test", "float")


def _ball_volume():
    """A 40-slice 128x128 volume with a ball (label 1) over slices 10-24 and a small block (label 2)."""
    z, y, x = np.mgrid[:40, :128, :128]
    labels = np.zeros((40, 128, 128), np.uint8)
    labels[(z - 17) ** 2 * 16 + (y - 50) ** 2 + (x - 50) ** 2 <= 30 ** 2] = 1
    labels[30:34, 90:110, 90:110] = 2
    image = np.where(labels > 0, 200, 20).astype(np.uint8)
    return image, labels


def _segment(case, model=None):
    model = model or BrightInBox()
    seg, ledger = segment_case(case, model, PLAN)
    model.ledger = ledger
    return seg, model


def test_recist_line_is_followed_both_ways_until_the_object_ends():
    image, labels = _ball_volume()
    case = successor_case("CT_Lesion_0001.npz", {"imgs": image, "recist": recist_from_labels(labels),
                                                 "spacing": np.array([1.0, 1, 1])}, "recist")
    seg, model = _segment(case)
    for value in (1, 2):
        zs = np.flatnonzero((seg == value).any(axis=(1, 2)))
        truth = np.flatnonzero((labels == value).any(axis=(1, 2)))
        assert zs[0] >= truth[0] - 1 and zs[-1] <= truth[-1] + 1
        dice = 2 * ((seg == value) & (labels == value)).sum() / ((seg == value).sum() + (labels == value).sum())
        assert dice > 0.85
    # each slice encoded once, and only the slices the objects reach and one past each end
    assert len(model.ledger.encoded) == len(set(model.ledger.encoded)) == len(model.encoded)
    assert len(model.encoded) <= len(np.flatnonzero(seg.any(axis=(1, 2)))) + 2 * 2


def test_interactive_round_one_from_boxes_and_a_click_only_class():
    image, labels = _ball_volume()
    boxes = round1_boxes(labels)
    boxes[1] = None
    members = {"imgs": image, "boxes": object_array(boxes),
               "clicks": object_array([{"fg": [], "bg": []}, {"fg": [(31, 100, 100)], "bg": []}])}
    seg, _ = _segment(successor_case("CT_X_0001.npz", members, "interactive"))
    assert ((seg == 1) & (labels == 1)).sum() > 0.9 * (labels == 1).sum()
    assert ((seg == 2) & (labels == 2)).sum() > 0                # grown from the click's box


def _round(image, labels, prev, kind, zyx, value=1, boxes=True):
    clicks = [{"fg": [], "bg": []} for _ in range(int(labels.max()))]
    order = [[] for _ in clicks]
    clicks[value - 1][kind].append(zyx)
    order[value - 1].append(kind)
    members = {"imgs": image, "clicks": object_array(clicks), "clicks_order": object_array(order), "prev_pred": prev}
    if boxes:
        members["boxes"] = object_array(round1_boxes(labels))
    return successor_case("CT_X_0001.npz", members, "interactive")


def test_without_a_z_range_a_deep_background_click_ends_the_object():
    image, labels = _ball_volume()
    prev = labels.copy()
    prev[25:29, 40:60, 40:60] = 1                  # overshoot: four slices past the ball's end
    seg, model = _segment(_round(image, labels, prev, "bg", (27, 50, 50), boxes=False))
    assert not (seg[27:] == 1).any() and np.array_equal(seg[:27], prev[:27])
    assert model.encoded == []


def test_background_click_past_the_box_range_cuts_the_object_to_it():
    image, labels = _ball_volume()
    prev = labels.copy()
    prev[25:29, 40:60, 40:60] = 1                  # overshoot: four slices past the ball's end
    seg, model = _segment(_round(image, labels, prev, "bg", (27, 50, 50)))
    assert not (seg[27:] == 1).any() and np.array_equal(seg[:25], prev[:25])
    assert model.encoded == []                     # nothing needed the model


def test_foreground_click_past_the_end_extends_and_encodes_only_new_slices():
    image, labels = _ball_volume()
    prev = labels.copy()
    prev[20:] = np.where(prev[20:] == 1, 0, prev[20:])      # the ball cut short at slice 19
    seg, model = _segment(_round(image, labels, prev, "fg", (22, 50, 50)))
    zs = np.flatnonzero((seg == 1).any(axis=(1, 2)))
    assert zs[-1] >= 23 and np.array_equal(seg[:20], prev[:20])
    assert len(model.encoded) <= (zs[-1] - 19) + 1


def test_background_click_in_a_stray_part_removes_only_that_part():
    image, labels = _ball_volume()
    prev = labels.copy()
    prev[2:4, 100:110, 10:20] = 1
    seg, _ = _segment(_round(image, labels, prev, "bg", (3, 105, 15)))
    assert np.array_equal(seg, labels)


def test_label_3d_links_diagonal_neighbours_across_slices():
    m = np.zeros((3, 10, 10), bool)
    m[0, 2, 2] = m[1, 3, 3] = True       # 26-connected (diagonal in z, y and x)
    m[2, 8, 8] = True                    # apart
    parts, n = label_3d(m)
    assert n == 2 and parts[0, 2, 2] == parts[1, 3, 3] != parts[2, 8, 8]
