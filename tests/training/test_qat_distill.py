"""`make qat-distill` on tiny data: the loss falls, the held-out agreement is measured, a rerun
resumes, and the checkpoint exports."""
import json

import numpy as np
import pytest
import torch

from tools.modalities import labelled_pairs
from training.qat.checkpoint import rebuild
from training.qat.distill import Settings, distill, is_better, mask_loss, select_parameters, worse_modalities
from training.qat.distill_data import BOXES_PER_VIEW, make_view, view_source

pytestmark = pytest.mark.slow


def test_views_have_boxes_inside_the_model_frame():
    rng = np.random.default_rng(0)
    img = (np.random.default_rng(1).random((90, 140)) * 255).astype(np.uint8)
    img[20:50, 30:80] = 250
    x, boxes = make_view(img, rng)
    assert x.shape == (3, 256, 256) and boxes.shape == (BOXES_PER_VIEW, 1, 4)
    assert (boxes >= 0).all() and (boxes <= 255).all() and (boxes[:, 0, 2:] >= boxes[:, 0, :2]).all()


def _row(loss, **by_modality):
    return {"selection": {"loss": loss, "by_modality": by_modality}}


def test_a_step_is_kept_only_when_no_modality_is_worse_than_at_the_start():
    start = _row(0.22, CT=0.10, MR=0.50)
    best = start
    traded = _row(0.21, CT=0.11, MR=0.40)      # a lower mean bought by CT: refused
    assert worse_modalities(traded, start) == ["CT"] and not is_better(traded, best, start)
    even = _row(0.215, CT=0.10, MR=0.45)       # CT as at the start, MR better: kept
    assert worse_modalities(even, start) == [] and is_better(even, best, start)
    assert not is_better(_row(0.216, CT=0.09, MR=0.45), even, start)   # not below the best so far
    # a run logged before the per-modality losses existed is judged on its mean
    assert is_better({"selection": {"loss": 0.2}}, {"selection": {"loss": 0.3}}, {"selection": {"loss": 0.3}})


def test_view_sources_repeat_the_cache_draw_and_give_each_modality_its_turn():
    from collections import Counter

    from training.qat.distill_data import TeacherCache

    kinds = ["CT"] * 20 + ["MR"] * 5 + ["Photo"]        # as lopsided as the public calibration images
    cache = TeacherCache(None, 30)
    sources = cache.sources(3, kinds)
    assert sources == [view_source(3, i, kinds)[0] for i in range(30)]
    assert Counter(kinds[j] for j in sources) == {"CT": 10, "MR": 10, "Photo": 10}
    assert [kinds[j] for j in sources[:3]] == ["CT", "MR", "Photo"]
    assert len(set(sources[0::3])) > 5                  # CT's turns go to many of its images


def test_a_cache_drawn_otherwise_is_not_resumed(tmp_path):
    from training.qat.distill_data import TeacherCache

    cache = TeacherCache(tmp_path, 4)
    (tmp_path / "meta.json").write_text(json.dumps({"done": 4, "n": 4, "seed": 0}))    # drawn over images
    assert cache.done(0) == 0
    (tmp_path / "meta.json").write_text(json.dumps({"done": 4, "n": 4, "seed": 0, "draw": "modalities in turn"}))
    assert cache.done(0) == 4 and cache.done(1) == 0


def test_mask_loss_is_lowest_at_the_teacher():
    t = torch.randn(3, 1, 16, 16) * 4
    assert float(mask_loss(t, t)) < float(mask_loss(-t, t))
    sure = torch.sign(t) * 50          # certain teacher: the KL and the Dice term both vanish at it
    assert abs(float(mask_loss(sure, sure))) < 1e-3


def test_a_few_steps_lower_the_loss_and_resume(weights, tmp_path):
    s = Settings(steps=6, views=1, val_views=1, batch=1, accum=1, lr=1e-4, scale_lr=1e-4, eval_every=6,
                 calib=2, weight_bits=7)   # one view: comparable losses; the student of encoder_w7
    held_out = {"CT": labelled_pairs((6,), ())}
    best = distill(tmp_path, s, weights, held_out, log=lambda m: None)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 6
    assert np.mean(losses[-2:]) < np.mean(losses[:2]), losses
    assert "CT" in best["held_out"] and (tmp_path / "best.pt").is_file() and (tmp_path / "curves.png").is_file()
    evals = [r for r in rows if "held_out" in r]
    assert [r["step"] for r in evals] == [0, 6] and all(0 <= r["selection"]["mask_dice"] <= 1 for r in evals)
    # one selection view: its modality's loss is the loss
    assert all(list(r["selection"]["by_modality"].values()) == [r["selection"]["loss"]] for r in evals)
    picked = min(evals, key=lambda r: r["selection"]["loss"])       # the selection views' loss chooses
    assert best["step"] == picked["step"] and best["selection"] == picked["selection"]
    # more steps asked: the rerun continues from last.pt instead of starting again
    distill(tmp_path, Settings(**dict(s.__dict__, steps=7)), weights, held_out, log=lambda m: None)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6, 7]
    model, structure = rebuild(torch.load(tmp_path / "best.pt", weights_only=False))
    assert structure.equalized and structure.merged_batchnorms and structure.weight_bits == 7
    # make export CKPT_W7=: the 7-bit checkpoint becomes a models folder's encoder_w7, recorded as QAT
    import shutil

    from conftest import MODELS
    from qmedsam.model.model import Model, ModelSettings
    from qmedsam.model.spec import ENCODER_W7
    from training.export import add_w7_encoder

    folder = tmp_path / "models"
    shutil.copytree(MODELS, folder, ignore=shutil.ignore_patterns("fp32", "encoder_w7.*"))
    add_w7_encoder(folder, weights, 0, ckpt=tmp_path / "best.pt")
    w7 = json.loads((folder / "manifest.json").read_text())["encoder_w7"]
    assert w7["method"].startswith("quantization-aware") and w7["weight_bits"] == 7
    assert w7["from"] == str(tmp_path / "best.pt") and w7["distillation"]["training_seconds"] > 0
    emb, _ = Model(folder, ModelSettings(encoder=ENCODER_W7.name)).encode(np.zeros((1, 3, 256, 256), np.float32),
                                                                         ENCODER_W7.name)
    assert emb.shape == (1, 256, 64, 64) and np.isfinite(emb).all()


def test_trainable_sets(weights):
    from training.qat.checkpoint import Structure, build_structure

    enc = build_structure(Structure(equalized=True)).image_encoder
    counts = {}
    for which in ("scales", "scales+biases", "all"):
        plain, scales = select_parameters(enc, which)
        counts[which] = (len(plain), len(scales))
    assert counts["scales"][0] == 0 and counts["scales"][1] > 0
    assert 0 < counts["scales+biases"][0] < counts["all"][0]
    assert len({c[1] for c in counts.values()}) == 1


def test_logged_seconds_add_up_over_resumes(tmp_path):
    from training.qat.distill import logged_seconds

    log = tmp_path / "log.jsonl"
    rows = [{"step": 0, "selection": {}}, {"step": 1, "seconds": 10.0}, {"step": 2, "seconds": 21.5},
            {"step": 3, "seconds": 9.0}, {"step": 4, "seconds": 18.0}]         # resumed after step 2
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert logged_seconds(log) == 39.5
    assert logged_seconds(tmp_path / "none.jsonl") is None
