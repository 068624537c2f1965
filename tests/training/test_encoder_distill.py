"""Distillation-only QAT of the int8 encoder against the float encoder (optional export step)."""
import numpy as np
import pytest
import torch

from training.encoder_distill import distill_encoder, embedding_loss, random_view
from training.model.lite_medsam import build_lite_medsam
from training.ptq import model_inputs, calibrate_encoder, rel_error
from training.ptq_recipe import PTQ_CONFIG


def test_random_view_is_a_seeded_model_input(ct_case):
    img = ct_case.image[15]
    a = random_view(img, np.random.default_rng(3))
    b = random_view(img, np.random.default_rng(3))
    assert a.shape == (1, 3, 256, 256) and torch.equal(a, b)
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0


def test_embedding_loss_is_relative():
    t = torch.randn(1, 256, 8, 8)
    assert float(embedding_loss(t, t)) == 0.0
    assert abs(float(embedding_loss(1.1 * t, t)) - 0.01) < 1e-4
    assert abs(float(embedding_loss(11 * t, 10 * t)) - 0.01) < 1e-4


@pytest.mark.slow
def test_distillation_brings_int8_encoder_towards_float(weights, float_model, ct_case):
    """All layers int8 (embedding error ~0.6 after calibration), a few steps on two slices."""
    torch.manual_seed(0)
    model = build_lite_medsam(weights, PTQ_CONFIG)
    slices = [ct_case.image[z] for z in (10, 22)]
    x = model_inputs([("ct", s) for s in slices])
    calibrate_encoder(model.image_encoder, x)
    qenc, fenc = model.image_encoder, float_model.image_encoder
    bn = {n: b.clone() for n, b in qenc.named_buffers() if "running" in n}

    def error():
        with torch.no_grad():
            return float(np.mean([rel_error(qenc(t), fenc(t)) for t in x]))

    before = error()
    losses = distill_encoder(qenc, fenc, slices, steps=6, batch=1, lr=1e-5, scale_lr=1e-5, seed=0)
    after = error()
    print(f"relative embedding error {before:.4f} -> {after:.4f}; losses {np.round(losses, 4)}")
    assert len(losses) == 6 and np.all(np.isfinite(losses))
    assert after < before
    assert not qenc.training
    assert all(torch.equal(b, dict(qenc.named_buffers())[n]) for n, b in bn.items())   # BN stats frozen
