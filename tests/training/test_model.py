"""LiteMedSAM in our own code: strict loading, parameter counts, the quant switch, real accuracy."""
import numpy as np
import pytest
import torch

from conftest import dice
from qmedsam_eval.label_boxes import boxes_from_labels, relabel_consecutive
from qmedsam.image.preprocess import boxes_to_model, image_to_tensor, logits_to_mask
from training.model.lite_medsam import LiteMedSAM, build_lite_medsam, count_parameters
from training.model.quant_switch import QuantConfig


def test_strict_load_and_parameter_counts(float_model, weights):
    state = torch.load(weights, map_location="cpu", weights_only=True)
    fresh = LiteMedSAM()
    fresh.load_state_dict(state, strict=True)          # raises on any missing/unexpected key
    assert count_parameters(float_model.image_encoder) == 5_726_740
    assert count_parameters(float_model.prompt_encoder) == 6_220
    assert count_parameters(float_model.mask_decoder) == 4_058_340


def test_strict_load_rejects_a_foreign_state(float_model):
    state = dict(float_model.state_dict())
    state.pop("mask_decoder.iou_token.weight")
    with pytest.raises(RuntimeError):
        LiteMedSAM().load_state_dict(state, strict=True)


def test_shapes(float_model):
    with torch.no_grad():
        emb = float_model.image_encoder(torch.rand(1, 3, 256, 256))
        logits = float_model.decoder()(emb, torch.tensor([[[10.0, 10, 100, 100]]] * 3))
    assert emb.shape == (1, 256, 64, 64) and logits.shape == (3, 1, 256, 256)


def test_quant_build_with_quantization_disabled_equals_float(weights, float_model):
    from brevitas.graph.calibrate import quantization_status_manager

    qmodel = build_lite_medsam(weights, QuantConfig(enabled=True))
    x = torch.rand(1, 3, 256, 256)
    boxes = torch.tensor([[[20.0, 30, 140, 200]], [[5.0, 5, 60, 90]]])
    with torch.no_grad():
        ref_emb = float_model.image_encoder(x)
        ref = float_model.decoder()(ref_emb, boxes)
        with quantization_status_manager(qmodel, disable_act_quant=True, disable_weight_quant=True,
                                         disable_bias_quant=True, is_training=False):
            emb = qmodel.image_encoder(x)
            out = qmodel.decoder()(emb, boxes)
    torch.testing.assert_close(emb, ref_emb, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-4)


def test_quant_build_has_quantizers_where_the_paper_puts_them(weights):
    import brevitas.nn as qnn

    q = build_lite_medsam(weights, QuantConfig(enabled=True))
    convs = [m for m in q.image_encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(isinstance(m, qnn.QuantConv2d) for m in convs)
    linears = [m for m in q.mask_decoder.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(isinstance(m, qnn.QuantLinear) for m in linears)
    assert not any(isinstance(m, qnn.QuantLinear) or isinstance(m, qnn.QuantConv2d)
                   for m in q.prompt_encoder.modules())
    attn = q.image_encoder.layers[1].blocks[0].attn
    assert all(isinstance(getattr(attn, f"{n}_quant"), qnn.QuantIdentity) for n in ("q", "k", "v", "attn"))
    assert isinstance(q.mask_decoder.hyper_quant, qnn.QuantIdentity)


def test_float_model_segments_real_ct_lungs(float_model, ct_case):
    z = ct_case.image.shape[0] // 2
    labels = relabel_consecutive(ct_case.labels[z])
    boxes = boxes_from_labels(labels)
    x, geo = image_to_tensor(ct_case.image[z])
    with torch.no_grad():
        emb = float_model.image_encoder(torch.from_numpy(x))
        logits = float_model.decoder()(emb, torch.from_numpy(boxes_to_model(boxes, geo))).numpy()
    names = ["right lung", "left lung"]
    values = np.unique(ct_case.labels[z])
    scores = {}
    for lab_value, name in zip((5, 6), names):     # slicerio label values of the lungs
        k = int(np.searchsorted(values[values > 0], lab_value))
        scores[name] = dice(logits_to_mask(logits[k, 0], geo), labels == k + 1)
    assert min(scores.values()) >= 0.85, scores
