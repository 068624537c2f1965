"""The benchmark case mix is shaped like a real set: mostly short 3D cases and 1-box 2D images."""
import numpy as np

from qmedsam.cases.read import load_case
from tools.case_mix import SHORT_Z, write_mix


def test_the_mix_is_mostly_short_cases_each_with_its_ground_truth(tmp_path):
    names = write_mix(tmp_path)
    assert len(names) >= 16 and len(set(names)) == len(names)
    short, one_box = [], []
    for name in names:
        case = load_case(tmp_path / "inputs" / name)
        gts = np.load(tmp_path / "gts" / name)["gts"]
        assert gts.shape == case.label_shape and gts.max() == len(case.boxes) > 0
        if case.is_3d and len(case.boxes) == 1:
            span = int(case.boxes[0, 5] - case.boxes[0, 2] + 1)
            assert SHORT_Z[0] <= span <= SHORT_Z[1]
            short.append(name)
        if not case.is_3d and len(case.boxes) == 1:
            one_box.append(name)
    assert len(short) + len(one_box) >= 0.7 * len(names)
    assert {n.split("_")[1] for n in short} >= {"CT", "MR", "Microscope"}
