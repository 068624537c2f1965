"""Calibration and held-out data for post-training quantization: more modalities, never mixed."""
from collections import Counter

import numpy as np

from tools import modalities
from tools.modalities import CALIBRATION, HELD_OUT, structure_boxes


def test_no_file_is_both_calibration_and_held_out():
    calib = {(s.folder, s.file) for s in CALIBRATION}
    held = {(s.folder, s.file) for s in HELD_OUT}
    assert not calib & held
    assert {s.modality for s in HELD_OUT} >= {"MR", "CT", "US", "Photo", "Microscope"}


def test_structure_boxes_find_bright_blobs_largest_first():
    img = np.full((200, 300), 20, np.uint8)
    img[40:100, 50:170] = 220          # 60 x 120
    img[150:170, 250:280] = 220        # 20 x 30
    img[5:7, 5:7] = 220                # too small to be a structure
    boxes = structure_boxes(img)
    np.testing.assert_allclose(boxes, [[50, 40, 169, 99], [250, 150, 279, 169]], atol=2)
    # dark structures on a bright background work the same way, in colour too
    inv = np.repeat((255 - img)[:, :, None], 3, axis=2)
    np.testing.assert_allclose(structure_boxes(inv), boxes, atol=2)


def test_calibration_set_mixes_modalities_and_leaves_held_out_slices_out():
    from tools.modalities import calibration_set, held_out_names, held_out_sets

    calib = calibration_set(48)
    tags = [t for t, _ in calib]
    assert len(tags) == len(set(tags)) == 48
    assert not set(tags) & held_out_names()
    kinds = Counter(t.split("-")[0] for t in tags[:10])
    assert {"ct", "mr", "us", "photo"} <= set(kinds), kinds
    held_tags = {t for _, t, _ in modalities.images(HELD_OUT)}
    assert not set(tags) & held_tags
    sets = held_out_sets()
    assert set(sets) == {"CT", "MR", "US", "Photo", "Microscope"}
    assert all(len(b) for pairs in sets.values() for _, b in pairs)
