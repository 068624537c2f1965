"""Progress of a long case (qmedsam.run.progress): silent at first, then one line rewritten in place,
erased at the end; the predictor shows it only on a terminal."""
import io

import numpy as np

from qmedsam.cases.read import Case
from qmedsam.run.progress import AFTER_S, EVERY_S, CaseProgress
from qmedsam.model.spec import ENCODER
from qmedsam.precision.policy import Plan
from qmedsam.segment.case_run import segment_case
from qmedsam.segment.ledger import Ledger
from qmedsam.segment.options import SegmentOptions
from test_int8_guard import TwoEncoders


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_a_short_case_prints_nothing_a_long_one_one_line_rewritten_then_erased():
    out, clock = io.StringIO(), Clock()
    p = CaseProgress("3DBox_MR_0001.npz", out, clock)
    stats = Ledger(planned=40, boxes_decoded=3, encoded=[0, 1])
    p(stats)
    clock.t = AFTER_S - 0.01
    p(stats)
    p.close()
    assert out.getvalue() == ""
    clock.t = AFTER_S + 1
    p(stats)
    clock.t += EVERY_S / 2                   # too soon to rewrite
    p(stats)
    assert out.getvalue().count("\r") == 1 and "2 of 40 images encoded, 3 boxes decoded" in out.getvalue()
    p.close()
    assert out.getvalue().endswith("\r\x1b[K") and "\n" not in out.getvalue()


def test_segmenting_reports_every_encoded_slice_and_decoded_box():
    seen = []
    vol = np.zeros((6, 32, 32), np.uint8)
    case = Case("3DBox_MR_0001.npz", vol, np.array([[2, 2, 1, 20, 20, 4], [4, 4, 2, 30, 30, 5]]))
    _, stats = segment_case(case, TwoEncoders(0), Plan(ENCODER.name, False, ""), SegmentOptions(interpolate=0),
                            progress=lambda s: seen.append((s.slices_encoded, s.boxes_decoded, s.planned)))
    assert seen[-1] == (5, 8, 5) and stats.boxes_decoded == 8
    assert [e for e, _, _ in seen] == sorted(e for e, _, _ in seen)


def test_the_predictor_prints_no_progress_when_stderr_is_not_a_terminal(tmp_path, capsys, monkeypatch):
    from conftest import SAMPLES
    from qmedsam.predict import main
    from qmedsam.run import progress

    monkeypatch.setattr(progress, "AFTER_S", 0.0)       # a terminal would see progress at once
    inputs = tmp_path / "in"
    inputs.mkdir()
    with np.load(SAMPLES / "inputs" / "3DBox_CT_0001.npz") as case:
        box = case["boxes"][:1].copy()
        box[0, 2], box[0, 5] = 10, 13
        np.savez_compressed(inputs / "3DBox_CT_0001.npz", imgs=case["imgs"], boxes=box, spacing=case["spacing"])
    assert main(["-i", str(inputs), "-o", str(tmp_path / "out"), "--cache", "none"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "images encoded" not in err and len(err.splitlines()) == 2
