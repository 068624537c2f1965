"""DSC/NSD: equality with DeepMind's surface-distance package (test-only dependency) and known answers."""
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from qmedsam_eval.metrics import case_scores, dice, label_scores, surface_dice
from qmedsam_eval.surfels import area_table, length_table

# the reference package still uses aliases NumPy 2 removed
np.Inf, np.NaN = np.inf, np.nan  # noqa: NPY001
sd = pytest.importorskip("surface_distance")
from surface_distance import lookup_tables  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def reference_nsd(gt, pred, spacing, tol=2.0):
    return sd.compute_surface_dice_at_tolerance(sd.compute_surface_distances(gt, pred, spacing), tol)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 1.3, 2.9), (3.0, 0.5, 0.5)])
def test_surfel_area_table_equals_the_reference(spacing):
    np.testing.assert_allclose(area_table(spacing),
                               lookup_tables.create_table_neighbour_code_to_surface_area(spacing),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.4, 2.2)])
def test_contour_length_table_equals_the_reference(spacing):
    np.testing.assert_allclose(length_table(spacing),
                               lookup_tables.create_table_neighbour_code_to_contour_length(spacing),
                               rtol=1e-12, atol=1e-12)


def _blobs(rng, shape, sigma, level):
    return ndimage.gaussian_filter(rng.random(shape), sigma) > level


@pytest.mark.parametrize("ndim", [2, 3])
def test_random_masks_match_the_reference(ndim):
    rng = np.random.default_rng(ndim)
    for trial in range(25):
        shape = tuple(rng.integers(6, 28, size=ndim))
        spacing = tuple(rng.uniform(0.3, 3.0, size=ndim))
        gt = _blobs(rng, shape, 1.2, 0.5)
        pred = rng.random(shape) > 0.6 if trial % 4 == 0 else _blobs(rng, shape, 1.0, 0.5)
        if not gt.any() or not pred.any():
            continue
        for tol in (0.5, 2.0, 4.0):
            assert surface_dice(gt, pred, spacing, tol) == pytest.approx(
                reference_nsd(gt, pred, spacing, tol), abs=1e-12)


def test_real_ct_labels_match_the_reference():
    with np.load(SAMPLES / "gts" / "3DBox_CT_0001.npz") as f:
        gts, spacing = f["gts"], tuple(f["spacing"])
    rng = np.random.default_rng(0)
    for lab in np.unique(gts)[1:]:
        gt = gts == lab
        pred = ndimage.binary_dilation(gt, iterations=1) if lab % 2 else ndimage.binary_erosion(gt)
        pred = np.roll(pred, int(rng.integers(-2, 3)), axis=int(rng.integers(0, 3)))
        if not pred.any():
            continue
        assert surface_dice(gt, pred, spacing) == pytest.approx(reference_nsd(gt, pred, spacing), abs=1e-12)
    with np.load(SAMPLES / "gts" / "2DBox_Microscope_0003.npz") as f:
        nuclei = f["gts"]
    gt, pred = nuclei > 0, np.roll(nuclei > 0, 1, axis=1)
    assert surface_dice(gt, pred, (1.0, 1.0)) == pytest.approx(reference_nsd(gt, pred, (1.0, 1.0)), abs=1e-12)


def test_known_answers():
    gt = np.zeros((20, 30, 30), bool)
    gt[5:15, 8:20, 10:22] = True
    assert dice(gt, gt) == 1.0 and surface_dice(gt, gt, (2.5, 0.8, 0.8)) == 1.0
    far = np.roll(gt, 15, axis=2)
    assert dice(gt, far) == 0.0
    assert label_scores(gt.astype(np.uint8), far.astype(np.uint8), (1, 1, 1))[0].nsd == 0.0  # DSC <= 0.2
    # a one-voxel shift along z: within tolerance at 1 mm slices, partly outside at 3 mm
    shifted = np.roll(gt, 1, axis=0)
    assert surface_dice(gt, shifted, (1.0, 0.8, 0.8)) == 1.0
    nsd_thick = surface_dice(gt, shifted, (3.0, 0.8, 0.8))
    assert 0.5 < nsd_thick < 1.0
    assert nsd_thick == pytest.approx(reference_nsd(gt, shifted, (3.0, 0.8, 0.8)), abs=1e-12)


def test_empty_masks_are_handled():
    empty, full = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    full[2:5, 2:6] = True
    assert surface_dice(empty, empty, (1, 1)) == 1.0 and dice(empty, empty) == 1.0
    assert surface_dice(full, empty, (1, 1)) == 0.0 and surface_dice(empty, full, (1, 1)) == 0.0
    assert dice(full, empty) == 0.0


def test_case_scores_average_labels_present_in_ground_truth():
    gt = np.zeros((40, 40), np.uint8)
    gt[2:10, 2:10] = 1
    gt[20:30, 20:30] = 3              # labels need not be consecutive
    pred = np.zeros_like(gt)
    pred[2:10, 2:10] = 1              # label 1 perfect, label 3 missing, label 7 only predicted
    pred[30:35, 30:35] = 7
    scores = label_scores(gt, pred, (1.0, 1.0))
    assert [(s.label, s.dsc, s.nsd) for s in scores] == [(1, 1.0, 1.0), (3, 0.0, 0.0)]
    assert case_scores(gt, pred, (1.0, 1.0)) == (0.5, 0.5)
