"""Case scores follow the organisers' compute_metrics rules exactly (reference: surface-distance).

Rules (shared/reference/challenge.md, Metrics): case DSC = mean Dice over the ground truth's labels;
NSD only when that case DSC > 0.2, else 0; a 2D case is an (H, W, 1) volume with spacing (1, 1, 1).
"""
import numpy as np
import pytest
from scipy import ndimage

from conftest import SAMPLES
from qmedsam_eval.metrics import case_scores, label_scores
from qmedsam_eval.scoring import score_case

np.Inf, np.NaN = np.inf, np.nan  # noqa: NPY001  (the reference package predates NumPy 2)
sd = pytest.importorskip("surface_distance")


def organiser_case(gt, pred, spacing):
    """The organisers' per-case computation, written against the reference package."""
    if gt.ndim == 2:
        gt, pred, spacing = gt[..., None], pred[..., None], (1.0, 1.0, 1.0)
    labels = np.unique(gt)[1:]
    dsc = float(np.mean([sd.compute_dice_coefficient(gt == lab, pred == lab) for lab in labels]))
    if dsc <= 0.2:
        return dsc, 0.0
    nsd = [sd.compute_surface_dice_at_tolerance(sd.compute_surface_distances(gt == lab, pred == lab, spacing), 2.0)
           for lab in labels]
    return dsc, float(np.mean(nsd))


def nuclei_like(rng, shape, n):
    """A 2D label map of n small discs (radius 2-7 px), labels 1..n, later ones on top."""
    gt = np.zeros(shape, np.uint16)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    for lab in range(1, n + 1):
        cy, cx, r = rng.integers(8, shape[0] - 8), rng.integers(8, shape[1] - 8), rng.integers(2, 8)
        gt[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = lab
    present = np.unique(gt)[1:]
    return np.searchsorted(np.concatenate([[0], present]), gt).astype(np.uint16)


def perturb(rng, gt, miss=0.1):
    """A plausible prediction: each label shifted by up to 2 px, dilated or eroded, some missed."""
    pred = np.zeros_like(gt)
    for lab in np.unique(gt)[1:]:
        if rng.random() < miss:
            continue
        m = gt == lab
        m = ndimage.binary_dilation(m) if rng.random() < 0.5 else ndimage.binary_erosion(m)
        pred[np.roll(m, tuple(rng.integers(-2, 3, size=gt.ndim)), axis=tuple(range(gt.ndim)))] = lab
    return pred


def assert_organiser_equal(gt, pred, spacing):
    ours = case_scores(gt, pred, spacing)
    ref = organiser_case(gt, pred, spacing)
    assert ours == pytest.approx(ref, abs=1e-6), (ours, ref)
    return ours


def test_2d_case_with_many_small_regions_is_a_one_slice_volume():
    rng = np.random.default_rng(1)
    gt = nuclei_like(rng, (180, 240), 60)
    pred = perturb(rng, gt)
    dsc, nsd = assert_organiser_equal(gt, pred, None)
    assert dsc > 0.2 and 0 < nsd < 1
    # the spacing argument does not change a 2D case's scores: the organisers use (1, 1, 1)
    assert case_scores(gt, pred, (0.3, 0.3)) == (dsc, nsd)


def test_2d_contours_alone_would_score_differently():
    """The top and bottom faces count as surface: the old contour NSD is not what is scored."""
    rng = np.random.default_rng(2)
    gt = nuclei_like(rng, (120, 120), 25)
    pred = np.roll(gt, 3, axis=1)                      # beyond the 2-pixel tolerance
    from qmedsam_eval.metrics import surface_dice

    contour = np.mean([surface_dice(gt == lab, pred == lab, (1.0, 1.0)) for lab in np.unique(gt)[1:]])
    _, nsd = assert_organiser_equal(gt, pred, None)
    assert abs(nsd - contour) > 0.01


def test_3d_case_with_anisotropic_spacing():
    rng = np.random.default_rng(3)
    gt = np.zeros((24, 40, 40), np.uint8)
    for lab in range(1, 5):
        z, y, x = rng.integers(4, 20), rng.integers(6, 34), rng.integers(6, 34)
        gt[z - 3:z + 3, y - 5:y + 5, x - 4:x + 4] = lab
    pred = perturb(rng, gt, miss=0.0)
    dsc, nsd = assert_organiser_equal(gt, pred, (2.5, 0.8, 0.8))
    assert dsc > 0.2 and 0 < nsd < 1


def test_case_dsc_at_or_below_the_gate_zeroes_nsd_even_where_labels_are_good():
    gt = np.zeros((60, 60), np.uint8)
    for lab in range(1, 6):
        gt[lab * 10:lab * 10 + 6, 5:15] = lab
    pred = np.where(gt == 1, 1, 0).astype(np.uint8)       # label 1 perfect, labels 2-5 missed
    labels = label_scores(gt, pred)
    assert [s.dsc for s in labels] == [1.0, 0.0, 0.0, 0.0, 0.0]      # case DSC 0.2: not > 0.2
    assert [s.nsd for s in labels] == [0.0] * 5
    assert assert_organiser_equal(gt, pred, None) == (0.2, 0.0)
    pred[gt == 2] = 2                                                 # case DSC 0.4: NSD computed
    dsc, nsd = assert_organiser_equal(gt, pred, None)
    assert (dsc, nsd) == pytest.approx((0.4, 0.4))


def test_a_missed_label_scores_zero_in_both():
    rng = np.random.default_rng(4)
    gt = nuclei_like(rng, (100, 100), 12)
    pred = gt.copy()
    pred[gt == 3] = 0
    labels = label_scores(gt, pred)
    assert (labels[2].dsc, labels[2].nsd) == (0.0, 0.0)
    assert_organiser_equal(gt, pred, None)


def test_real_sample_cases_through_the_folder_scorer(tmp_path):
    rng = np.random.default_rng(5)
    for name in ("2DBox_Microscope_0003.npz", "3DBox_CT_0001.npz"):
        with np.load(SAMPLES / "gts" / name) as f:
            gt, spacing = f["gts"], (tuple(f["spacing"]) if "spacing" in f.files else None)
        pred = perturb(rng, gt)
        np.savez(tmp_path / name, segs=pred)
        got = score_case(SAMPLES / "gts" / name, tmp_path / name)
        ref = organiser_case(gt, pred, spacing if gt.ndim == 3 else None)
        assert (got.dsc, got.nsd) == pytest.approx(ref, abs=1e-6), name
