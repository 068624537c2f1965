"""The Python API (qmedsam.Segmenter): the README's example, the same label maps as the command
line, box-by-box decoding without another encoder pass, sessions that keep their own image, and
bad input refused with the command line's one-line message."""
import re
import shutil

import numpy as np
import pytest

from conftest import ROOT, SAMPLES
import qmedsam
from qmedsam.image.predictor import ImagePredictor, NoImageError
from qmedsam.predict import main


@pytest.fixture(scope="module")
def segmenter():
    return qmedsam.Segmenter()


def test_the_readme_example_runs(monkeypatch):
    block = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    monkeypatch.chdir(ROOT)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert scope["labels"].shape == np.load(SAMPLES / "inputs" / "3DBox_CT_0001.npz")["imgs"].shape
    assert scope["mask"].dtype == bool and isinstance(scope["iou"], float)


def test_segment_gives_the_map_the_command_line_writes(segmenter, tmp_path):
    """On the 2D samples (one zoomed) and short 3D cases: every path of the product."""
    from conftest import write_short_cases

    inputs = tmp_path / "in"
    write_short_cases(inputs)
    assert main(["-i", str(inputs), "-o", str(tmp_path), "-q", "--cache", "none"]) == 0
    for path in sorted(inputs.glob("*.npz")):
        with np.load(path) as case:
            spacing = case["spacing"] if "spacing" in case.files else None
            labels = segmenter.segment(case["imgs"], case["boxes"], spacing=spacing)
        written = np.load(tmp_path / path.name)["segs"]
        assert labels.dtype == written.dtype and np.array_equal(labels, written), path.name


def test_predict_decodes_against_the_set_image_without_encoding_it_again(segmenter):
    with np.load(SAMPLES / "inputs" / "2DBox_CT_0002.npz") as case:
        image, boxes = case["imgs"], case["boxes"]
    session = segmenter.set_image(image)
    ledger = session.predictor.ledger
    assert sum(ledger.encoder_passes.values()) == 1
    masks = [session.predict(box) for box in boxes]
    assert sum(ledger.encoder_passes.values()) == 1                 # no encoder pass per prompt
    assert ledger.decoder_calls == len(boxes)
    for (mask, iou), box in zip(masks, boxes):
        assert mask.shape == image.shape[:2] and mask.dtype == bool and 0.0 < iou <= 1.5
        # the mask of a box is the label map's of that box alone (the plain 2D path: no zoom)
        alone = segmenter.segment(image, box[None], zoom="off")
        assert np.array_equal(mask, alone == 1)


def test_two_sessions_on_one_model_keep_their_own_image(segmenter):
    with np.load(SAMPLES / "inputs" / "2DBox_CT_0002.npz") as case:
        ct, ct_box = case["imgs"], case["boxes"][0]
    with np.load(SAMPLES / "inputs" / "2DBox_Microscope_0003.npz") as case:
        cells = case["imgs"]
    first = segmenter.set_image(ct)
    alone, iou = first.predict(ct_box)
    second = segmenter.set_image(cells)                   # its own decoder state: the first's is left alone
    second.predict([10, 10, 60, 60])
    again, iou_again = first.predict(ct_box)
    assert np.array_equal(again, alone) and iou_again == iou


def test_decoding_before_an_image_is_set_is_refused(segmenter):
    with pytest.raises(NoImageError, match="before an image is set"):
        ImagePredictor(segmenter.model, 4).decode(np.zeros((1, 1, 4), np.float32))


@pytest.mark.parametrize("image, boxes", [
    (np.zeros((32, 32, 4), np.uint8), np.array([[1, 1, 5, 5]])),            # bad shape
    (np.zeros((32, 32), np.uint8), np.array([[40, 40, 50, 50]])),           # box outside the image
    (np.full((32, 32), 300, np.int32), np.array([[1, 1, 5, 5]])),           # not uint8 intensities
    (np.zeros((32, 32), bool), np.array([[1, 1, 5, 5]])),                   # wrong dtype
    (np.zeros((4, 32, 32), np.uint8), np.array([[1, 1, 5, 5, 5, 9]])),      # z range outside the volume
])
def test_bad_input_raises_case_error_with_the_command_lines_message(segmenter, tmp_path, capsys, image, boxes):
    with pytest.raises(qmedsam.CaseError) as raised:
        segmenter.segment(image, boxes)
    inputs = tmp_path / "in"
    inputs.mkdir()
    np.savez(inputs / f"{'3D' if boxes.shape[1] == 6 else '2D'}Box_array.npz", imgs=image, boxes=boxes)
    assert main(["-i", str(inputs), "-o", str(tmp_path / "out"), "-q", "--cache", "none"]) == 1
    assert f": {raised.value}" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "out")
