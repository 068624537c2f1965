"""The post-training quantization recipe used by ``make export`` without a QAT checkpoint."""
from __future__ import annotations

from pathlib import Path

import torch

from qmedsam.label_boxes import boxes_from_labels, relabel_consecutive
from training.model.lite_medsam import LiteMedSAM, build_lite_medsam
from training.model.quant_switch import QuantConfig
from training.ptq import (_tensors, calibrate_decoder, calibrate_encoder, choose_float_groups,
                          decoder_calibration_batches, decoder_error, keep_float)
from training.public_data import calibration_slices, ct_chest, nuclei_2d

N_EVAL = 8


def decoder_data(max_boxes: int = 16):
    """Real (image, boxes) pairs: CT axial slices with their structures, nuclei crops."""
    ct = ct_chest()
    pairs = []
    for z in range(2, ct.image.shape[0] - 2, 4):
        lab = relabel_consecutive(ct.labels[z])
        if lab.max():
            pairs.append((ct.image[z], boxes_from_labels(lab)[:max_boxes]))
    n2 = nuclei_2d()
    for i in range(4):
        ys, xs = slice((i // 2) * 256, (i // 2 + 1) * 256), slice((i % 2) * 256, (i % 2 + 1) * 256)
        lab = relabel_consecutive(n2.labels[ys, xs])
        pairs.append((n2.image[ys, xs], boxes_from_labels(lab)[:max_boxes]))
    return pairs


def post_training_quantize(weights: Path, n_calib: int, target: float) -> tuple[LiteMedSAM, dict]:
    torch.manual_seed(0)
    fmodel = build_lite_medsam(weights)
    q = QuantConfig(enabled=True, weight_per_channel=True)
    model = build_lite_medsam(weights, q)
    slices = calibration_slices()
    # evaluation slices are held out from calibration: every 41st slice
    eval_idx = set(range(0, len(slices), len(slices) // N_EVAL)[:N_EVAL])
    evals = [s for i, s in enumerate(slices) if i in eval_idx]
    calib = [s for i, s in enumerate(slices) if i not in eval_idx][:n_calib]
    calibrate_encoder(model.image_encoder, _tensors(calib))
    all_err, final_err, group_err, chosen, float_layers = choose_float_groups(
        model.image_encoder, fmodel.image_encoder, _tensors(evals), target)
    keep_float(model.image_encoder, float_layers)
    batches = decoder_calibration_batches(fmodel, decoder_data())
    calibrate_decoder(model.decoder(), batches)
    dec_err = decoder_error(model.decoder(), fmodel.decoder(), batches)
    record = {
        "method": "post-training quantization (Brevitas calibration_mode)",
        "quantization": {
            "weights": "int8 symmetric, per output channel",
            "activations": "int8 per tensor (inputs of every conv/linear/transposed conv, "
                           "q/k/v, hypernetwork and upscaled-embedding operands); "
                           "uint8 per tensor for softmax outputs",
            "float": "LayerNorm, BatchNorm, GELU/ReLU, softmax, biases, prompt encoder",
        },
        "calibration": {"encoder_slices": [n for n, _ in calib],
                        "decoder_cases": len(batches),
                        "source": "slicerio==1.4.0 CTChest4 (3 windows, 3 planes), "
                                  "stardist==0.9.2 nuclei 2D/3D"},
        "sensitivity": {
            "metric": "mean relative L2 error of the image embedding vs float on held-out slices",
            "evaluation_slices": [n for n, _ in evals],
            "error_all_int8": round(all_err, 4),
            "error_when_only_this_group_is_int8": {k: round(v, 4) for k, v in
                                                   sorted(group_err.items(), key=lambda kv: -kv[1])},
            "target": target,
            "groups_kept_float": chosen,
            "error_final": round(final_err, 4),
        },
        "float_layers": float_layers,
        "decoder_relative_logit_error": round(dec_err, 4),
    }
    return model.eval(), record
