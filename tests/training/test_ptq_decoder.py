"""The decoder's quantization choice, checked on real CT boxes: token->image softmax stays float."""
import pytest
import torch

from qmedsam_eval.label_boxes import boxes_from_labels, relabel_consecutive
from training.model.lite_medsam import build_lite_medsam
from training.model.quant_switch import QuantConfig
from training.ptq import calibrate_decoder, decoder_calibration_batches, mask_dice
from training.ptq_recipe import PTQ_CONFIG

CALIB_Z, EVAL_Z = (8, 16, 24), (12, 20, 28)


def _pairs(ct_case, zs):
    out = []
    for z in zs:
        lab = relabel_consecutive(ct_case.labels[z])
        if lab.max():
            out.append((ct_case.image[z], boxes_from_labels(lab)))
    return out


def _token_to_image_attentions(decoder):
    t = decoder.mask_decoder.transformer
    return [b.cross_attn_token_to_image for b in t.layers] + [t.final_attn_token_to_image]


def test_token_to_image_softmax_is_the_only_float_operand(weights):
    import brevitas.nn as qnn

    dec = build_lite_medsam(weights, QuantConfig(enabled=True)).decoder()
    t2i = _token_to_image_attentions(dec)
    assert all(isinstance(a.attn_quant, torch.nn.Identity) for a in t2i)
    assert all(isinstance(getattr(a, f"{n}_quant"), qnn.QuantIdentity) for a in t2i for n in "qkv")
    others = [b.self_attn for b in dec.mask_decoder.transformer.layers] + \
             [b.cross_attn_image_to_token for b in dec.mask_decoder.transformer.layers]
    assert all(isinstance(a.attn_quant, qnn.QuantIdentity) for a in others)


@pytest.mark.slow
def test_float_token_to_image_softmax_keeps_decoder_masks_close_to_float(weights, float_model, ct_case):
    """With the float softmax the int8 decoder's masks match the float decoder's far better
    than with an 8-bit one (measured here: mean Dice ~0.99 against ~0.97)."""
    calib = decoder_calibration_batches(float_model, _pairs(ct_case, CALIB_Z))
    held_out = decoder_calibration_batches(float_model, _pairs(ct_case, EVAL_Z))
    fdec = float_model.decoder()

    def agreement(quantize_softmax: bool) -> float:
        torch.manual_seed(0)
        dec = build_lite_medsam(weights, PTQ_CONFIG).decoder()
        if quantize_softmax:
            for a in _token_to_image_attentions(dec):
                a.attn_quant = PTQ_CONFIG.operand(unsigned=True)   # as every other softmax
        calibrate_decoder(dec, calib)
        with torch.no_grad():
            d = [mask_dice(dec(e, b) > 0, fdec(e, b) > 0) for e, b in held_out]
        return float(torch.cat(d).mean())

    kept_float, quantized = agreement(False), agreement(True)
    print(f"decoder mask Dice vs float: softmax float {kept_float:.4f}, int8 {quantized:.4f}")
    assert kept_float >= 0.98
    assert kept_float > quantized
