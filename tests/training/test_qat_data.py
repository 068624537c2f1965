"""QAT data: online index and bisect mapping, balanced DDP sampler, samples, corrupt files, losses."""
import os
import time

import numpy as np
import pytest
import torch

from training.data.dataset import Augment, SliceDataset
from training.data.index import build_index, modality_for
from training.data.sampler import BalancedSampler, samples_per_modality
from training.qat.losses import (dice_loss, distillation_loss, focal_loss, mask_iou,
                                 segmentation_loss)
from training.qat.config import lr_factor


def write_tree(root, n2d=6, n3d=4, seed=0):
    """Synthetic challenge tree: CT/ (3D, some unlabelled slices), MR/ (2D), a modality from a name."""
    rng = np.random.default_rng(seed)
    truth = {}
    for i in range(n3d):
        d = 5 + i
        gts = np.zeros((d, 40, 48), np.uint8)
        labelled = sorted(rng.choice(d, size=3, replace=False).tolist())
        for z in labelled:
            y, x = rng.integers(5, 25), rng.integers(5, 30)
            gts[z, y:y + 10, x:x + 12] = rng.integers(1, 4)
        imgs = (rng.random((d, 40, 48)) * 80 + gts * 50).astype(np.uint8)
        path = root / "CT" / f"3DBox_CT_{i:04d}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, imgs=imgs, gts=gts, spacing=np.array([3.0, 0.8, 0.8]))
        truth[str(path.relative_to(root))] = labelled
    for i in range(n2d):
        gts = np.zeros((36, 44), np.uint8)
        if i != 0:                                         # one unlabelled 2D image: not a sample
            gts[8:20, 10:30] = 1
            gts[22:30, 5:12] = 2
        imgs = np.repeat((gts * 90 + 20).astype(np.uint8)[:, :, None], 3, axis=2)
        path = root / "MR" / f"2DBox_MR_{i:04d}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, imgs=imgs, gts=gts)
        truth[str(path.relative_to(root))] = [0] if i else []
    gts = np.zeros((30, 30), np.uint8)
    gts[5:15, 5:15] = 1
    np.savez_compressed(root / "2DBox_Endoscopy_0001.npz", imgs=np.zeros((30, 30, 3), np.uint8), gts=gts)
    truth["2DBox_Endoscopy_0001.npz"] = [0]
    return truth


def test_index_maps_every_labelled_slice_exactly_once(tmp_path):
    truth = write_tree(tmp_path)
    index = build_index(tmp_path, workers=1, progress=False)
    expected = sorted((p, z) for p, zs in truth.items() for z in zs)
    got = sorted((index.entries[i].path, z) for i, z in (index.locate(g) for g in range(len(index))))
    assert got == expected and len(index) == len(expected)
    assert index.modalities == ["CT", "Endoscopy", "MR"]
    assert modality_for("CT/3DBox_CT_0001.npz") == "CT" and modality_for("2DBox_US_0003.npz") == "US"
    with pytest.raises(IndexError):
        index.locate(len(index))
    ids = index.samples_of(range(len(index.entries)))
    assert ids.tolist() == list(range(len(index)))


def test_index_is_cached_and_rebuilt_for_changed_files(tmp_path):
    write_tree(tmp_path)
    first = build_index(tmp_path, workers=1, progress=False)
    assert (tmp_path / ".qmedsam-index.json").is_file()
    target = tmp_path / "CT" / "3DBox_CT_0000.npz"
    with np.load(target) as f:
        imgs, gts, sp = f["imgs"], f["gts"], f["spacing"]
    gts[:] = 0
    gts[:, 1:3, 1:3] = 1                                    # now every slice is labelled
    np.savez_compressed(target, imgs=imgs, gts=gts, spacing=sp)
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))
    second = build_index(tmp_path, workers=1, progress=False)
    entry = next(e for e in second.entries if e.path == "CT/3DBox_CT_0000.npz")
    assert entry.slices == list(range(gts.shape[0]))
    assert len(second) == len(first) - 3 + gts.shape[0]


def test_corrupt_files_are_skipped_with_a_warning(tmp_path):
    write_tree(tmp_path)
    (tmp_path / "MR" / "2DBox_MR_0099.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.warns(UserWarning, match="2DBox_MR_0099"):
        index = build_index(tmp_path, workers=1, progress=False)
    assert index.skipped and all(e.path != "MR/2DBox_MR_0099.npz" for e in index.entries)
    # a file that breaks after indexing is skipped when read
    ds = SliceDataset(index)
    victim = index.locate(0)
    (tmp_path / index.entries[victim[0]].path).write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="skipping unreadable training file"):
        item = ds[0]
    assert item["image"].shape == (3, 256, 256)


def test_split_is_by_case_and_fixed_by_seed(tmp_path):
    write_tree(tmp_path, n2d=11, n3d=10)
    index = build_index(tmp_path, workers=1, progress=False)
    train, val = index.split(0.1, seed=3)
    assert not set(train) & set(val) and sorted(train + val) == list(range(len(index.entries)))
    assert index.split(0.1, seed=3) == (train, val)
    assert {index.entries[i].modality for i in val} == {"CT", "MR"}     # ~10% of each modality


def test_sampler_balances_modalities_and_shards_for_ddp():
    groups = {"CT": np.arange(0, 100), "MR": np.arange(100, 107), "US": np.arange(200, 230)}
    counts = samples_per_modality({k: len(v) for k, v in groups.items()}, "min")
    assert counts == {"CT": 7, "MR": 7, "US": 7}
    assert samples_per_modality({"CT": 1000, "MR": 70}, "tenth") == {"CT": 100, "MR": 70}
    assert samples_per_modality({"CT": 1000, "MR": 70}, 900) == {"CT": 900, "MR": 900}
    counts = {"CT": 20, "MR": 20, "US": 20}                     # MR has 7: drawn with repeats
    whole = BalancedSampler(groups, counts, seed=5).epoch_samples()
    for name, ids in groups.items():
        assert np.isin(whole, ids).sum() == 20
    shards = [list(BalancedSampler(groups, counts, seed=5, rank=r, world=4)) for r in range(4)]
    assert all(len(s) == len(shards[0]) == 15 for s in shards)
    assert sorted(sum(shards, [])) == sorted(whole.tolist())      # disjoint shares that cover the epoch
    s = BalancedSampler(groups, counts, seed=5)
    a = list(s)
    s.set_epoch(1)
    assert list(s) != a
    s.set_epoch(0)
    assert list(s) == a                                            # reproducible from seed and epoch


def test_samples_use_the_runtime_preprocessing_and_augment(tmp_path):
    write_tree(tmp_path)
    index = build_index(tmp_path, workers=1, progress=False)
    g = next(g for g in range(len(index)) if index.entries[index.locate(g)[0]].modality == "MR")
    plain = SliceDataset(index)[g]
    from qmedsam.image.preprocess import image_to_tensor

    image, labels, _, _ = SliceDataset(index).raw(g)
    np.testing.assert_array_equal(plain["image"].numpy(), image_to_tensor(image)[0][0])
    m = plain["mask"][0].numpy() > 0
    ys, xs = np.nonzero(m)
    box = plain["box"][0].numpy()                                 # tight box, 256-space
    assert abs(box[0] - xs.min()) <= 6 and abs(box[2] - xs.max()) <= 6
    jittered = SliceDataset(index, Augment(jitter=5, flip=True), seed=1)
    boxes = {tuple(jittered[g]["box"][0].tolist())}
    again = SliceDataset(index, Augment(jitter=5, flip=True), seed=1)
    assert boxes == {tuple(again[g]["box"][0].tolist())}          # same seed, epoch -> same sample
    again.set_epoch(4)
    draws = {tuple(again[g]["box"][0].tolist())}
    for e in range(5, 12):
        again.set_epoch(e)
        draws.add(tuple(again[g]["box"][0].tolist()))
    assert len(draws) > 1                                          # jitter/flip/label vary by epoch


def test_losses_on_known_cases():
    t = torch.zeros(2, 1, 8, 8)
    t[:, :, 2:6, 2:6] = 1
    perfect = (t * 2 - 1) * 50
    assert dice_loss(perfect, t) < 1e-3 and focal_loss(perfect, t) < 1e-6
    assert dice_loss(-perfect, t) > 0.9
    z = torch.zeros_like(t)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(z, t)
    assert torch.isclose(focal_loss(z, t, gamma=0.0, alpha=-1), bce)
    assert torch.isclose(focal_loss(z, t, gamma=2.0, alpha=-1), bce * 0.25)   # (1 - 0.5)^2
    assert torch.isclose(segmentation_loss(z, t, 1.0, 0.0, "bce"), dice_loss(z, t))
    assert mask_iou(perfect, t).tolist() == [1.0, 1.0] and mask_iou(-perfect, t).tolist() == [0.0, 0.0]
    s, te = torch.ones(2, 4, 3, 3), torch.zeros(2, 4, 3, 3)
    assert distillation_loss(s, te, torch.tensor([1.0, 0.0])) == pytest.approx(0.5)
    assert distillation_loss(te, te, torch.ones(2)) == 0


def test_learning_rate_schedule():
    sched = {"warmup_epochs": 5, "warmup_start_fraction": 0.01, "cosine_epochs": 10, "final_fraction": 0.001}
    assert lr_factor(0, 10, sched) == pytest.approx(0.01)
    assert lr_factor(50, 10, sched) == pytest.approx(1.0)
    assert lr_factor(100, 10, sched) == pytest.approx(0.5005)
    assert lr_factor(150, 10, sched) == pytest.approx(0.001)


def test_public_tree_holds_its_test_cases_out_of_training(tmp_path):
    from tools.make_public_tree import write_tree as public_tree

    counts = public_tree(tmp_path)
    assert counts["test"] == 3 and counts["train"] >= 10
    held = {p.name for p in (tmp_path / "test" / "gts").glob("*.npz")}
    assert held == {p.name for p in (tmp_path / "test" / "inputs").glob("*.npz")}
    assert {n.split("_")[1] for n in held} == {"CT", "Microscope"}
    def slices(path):
        img = np.load(path)["imgs"]
        return [img] if path.name.startswith("2D") else list(img)

    seen = {s.tobytes() for p in (tmp_path / "train").rglob("*.npz") for s in slices(p)}
    for p in (tmp_path / "test" / "inputs").glob("*.npz"):
        assert not any(s.tobytes() in seen for s in slices(p)), p.name
