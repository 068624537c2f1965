"""The API's new prompts on the real model: SAM's points and mask input on one image, and the
successors' volume prompts giving the label maps the command line writes for the same case files."""
import numpy as np
import pytest

from benchmarks.prompt_cases import next_click, object_array, recist_from_labels, round1_boxes
from conftest import SAMPLES
import qmedsam
from qmedsam.predict import main


@pytest.fixture(scope="module")
def segmenter():
    return qmedsam.Segmenter()


@pytest.fixture(scope="module")
def short_ct():
    """Slices 8-15 of the sample CT and its labels (a short volume: quick)."""
    image = np.load(SAMPLES / "inputs" / "3DBox_CT_0001.npz")
    gts = np.load(SAMPLES / "gts" / "3DBox_CT_0001.npz")
    return image["imgs"][8:16], gts["gts"][8:16], image["spacing"]


def test_points_boxes_and_mask_input_together(segmenter):
    with np.load(SAMPLES / "inputs" / "2DBox_CT_0002.npz") as case:
        image, box = case["imgs"], case["boxes"][0]
    session = segmenter.set_image(image)
    alone = session.prompt(box=box)
    mask, iou = session.predict(box)
    assert np.array_equal(alone.mask, mask) and alone.iou == iou and alone.low_res_logits.shape == (256, 256)
    centre = [[(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]]
    both = session.prompt(box=box, points=centre, labels=[1])
    again = session.prompt(box=box, mask_input=alone.low_res_logits)
    for answer in (both, again):
        assert answer.mask.shape == image.shape[:2] and answer.mask.dtype == bool and np.isfinite(answer.iou)
        overlap = (answer.mask & alone.mask).sum() / max(alone.mask.sum(), 1)
        assert overlap > 0.7                      # the same object, a little changed
    assert sum(session.predictor.ledger.encoder_passes.values()) == 1


@pytest.mark.parametrize("kwargs,reason", [
    (dict(points=[[5000, 3]], labels=[1]), "lies outside"),
    (dict(points=[[5, 3]], labels=[7]), "labels must be 0 or 1"),
    (dict(mask_input=np.zeros((64, 64))), "expected (256, 256)"),
    (dict(), "needs a box, points or a mask_input"),
])
def test_bad_prompts_get_one_line(segmenter, kwargs, reason):
    with np.load(SAMPLES / "inputs" / "2DBox_CT_0002.npz") as case:
        session = segmenter.set_image(case["imgs"])
    with pytest.raises(qmedsam.CaseError) as e:
        session.prompt(**kwargs)
    assert reason in str(e.value) and "\n" not in str(e.value)


def test_volume_prompts_match_the_command_line(segmenter, short_ct, tmp_path):
    image, labels, spacing = short_ct
    recist = recist_from_labels(labels)
    boxes = round1_boxes(labels)
    inputs = tmp_path / "in"
    inputs.mkdir()
    np.savez(inputs / "CT_Lesion_0001.npz", imgs=image, spacing=spacing, recist=recist)
    np.savez(inputs / "CT_Inter_0001.npz", imgs=image, spacing=spacing, boxes=object_array(boxes))
    assert main(["-i", str(inputs), "-o", str(tmp_path / "out"), "-q"]) == 0
    from_recist = segmenter.from_recist(image, recist, spacing=spacing)
    assert np.array_equal(from_recist, np.load(tmp_path / "out" / "CT_Lesion_0001.npz")["segs"])
    first = segmenter.interact(image, boxes=boxes, spacing=spacing)
    assert np.array_equal(first, np.load(tmp_path / "out" / "CT_Inter_0001.npz")["segs"])
    # a click round, through the API and as a fresh case file, from the same previous map
    clicks = [{"fg": [], "bg": []} for _ in boxes]
    order = [[] for _ in boxes]
    for k in range(len(boxes)):
        click = next_click(labels, first, k + 1)
        if click:
            clicks[k][click[0]].append(click[1])
            order[k].append(click[0])
    second = segmenter.interact(image, boxes=boxes, clicks=clicks, clicks_order=order, prev_pred=first,
                                spacing=spacing)
    np.savez(inputs / "CT_Inter_0001.npz", imgs=image, spacing=spacing, boxes=object_array(boxes),
             clicks=object_array(clicks), clicks_order=object_array(order), prev_pred=first)
    (inputs / "CT_Lesion_0001.npz").unlink()
    assert main(["-i", str(inputs), "-o", str(tmp_path / "out"), "-q"]) == 0
    assert np.array_equal(second, np.load(tmp_path / "out" / "CT_Inter_0001.npz")["segs"])
    assert second.dtype == np.uint8 and not np.array_equal(second, first)


def test_from_slice_follows_one_box(segmenter, short_ct):
    image, labels, _ = short_ct
    value = 7                                  # the largest structure: on every slice
    z = 4
    ys, xs = np.nonzero(labels[z] == value)
    out = segmenter.from_slice(image, z, [xs.min(), ys.min(), xs.max(), ys.max()])
    assert set(np.unique(out)) <= {0, 1} and (out[z] == 1).any()
    assert (out == 1).any(axis=(1, 2)).sum() >= 3


def test_the_readme_prompts_example_runs(monkeypatch):
    import re

    from conftest import ROOT

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    block = next(b for b in blocks if "from_recist" in b)
    monkeypatch.chdir(ROOT)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert scope["lesions"].shape == scope["volume"].shape and (scope["lesions"][20] == 1).any()
    assert (scope["organ"] == 1).any(axis=(1, 2)).sum() >= 2
    assert scope["again"].low_res_logits.shape == (256, 256)
