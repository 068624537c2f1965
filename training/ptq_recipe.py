"""The post-training quantization recipe used by ``make export`` without a QAT checkpoint.

Every encoder layer int8 (no float groups), built from Brevitas' PTQ tools and kept only
where the held-out agreement with the float model says they pay:

1. BatchNorm merged into the convolutions, per-output-channel int8 weights;
2. activation equalization (SmoothQuant-style, ``ALPHA``);
3. activation calibration (percentile statistics);
4. bias correction, kept only if the held-out agreement improves.

Calibration mixes CT, MR, ultrasound, photographs and microscopy; agreement is measured on
other images of the same kinds (``tools.modalities.held_out_sets``), per modality.
"""
from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import torch

from tools.modalities import EVAL_CT_SLICES, calibration_set, held_out_sets, labelled_pairs
from training.model.lite_medsam import LiteMedSAM, build_lite_medsam
from training.model.quant_switch import QuantConfig
from training.model.surgery import group_of, keep_float, layers_in_groups, merge_batchnorms, quant_leaves
from training.ptq import (model_inputs, agreement, agreement_by_modality, calibrate_decoder,
                          calibrate_encoder, correct_bias, decoder_calibration_batches, decoder_error,
                          equalize_activations, joined, make_eval_set)

# Per-channel weights: with the BatchNorms merged and the dequantization constants untied
# (training/onnx_fold.py) OpenVINO runs every convolution and linear in int8.
PTQ_CONFIG = QuantConfig(enabled=True, weight_per_channel=True, range_aware_inputs=True)
# SmoothQuant migration strength and activation statistics, measured on two held-out images
# per modality with 16 calibration slices (mean mask Dice vs float over CT, microscopy, MR,
# ultrasound, photographs): alpha 0.5 with Brevitas' default 99.999th percentile 0.888; alpha
# 0.7 0.877; 99.99th percentile 0.856; the maximum 0.896 (within noise of the default).
# MSE statistics (Int8ActPerTensorFloatMSE) did not finish 16 slices in 6 minutes on 2 cores.
ALPHA = 0.5
# Encoder groups kept float (training.model.surgery.ENCODER_GROUPS), chosen by `make bench-mixed`:
# the cheapest groups that win the most held-out agreement per millisecond (the patch embedding,
# stage 0 and the second patch merge: mean mask Dice vs float 0.915 -> 0.938, MR 0.843 -> 0.901
# with VNNI; 0.801 -> 0.862 without).
FLOAT_GROUPS = ("patch_embed", "stage0.mbconv", "merge1")
# Optional encoder distillation after calibration (``make export DISTILL=steps``).
DISTILL_SETTINGS = {"batch": 2, "lr": 1e-5, "scale_lr": 1e-5}
BIAS_SLICES = 24


def distill(model: LiteMedSAM, fmodel: LiteMedSAM, slices, steps: int) -> dict:
    """Optional distillation-only QAT of the int8 encoder (see training/encoder_distill.py)."""
    from training.encoder_distill import distill_encoder

    losses = distill_encoder(model.image_encoder, fmodel.image_encoder, slices, steps, **DISTILL_SETTINGS)
    return {"steps": steps, **DISTILL_SETTINGS, "unlabelled_slices": len(slices),
            "first_loss": round(losses[0], 4), "last_loss": round(losses[-1], 4)}


def float_layers(model: LiteMedSAM, groups=FLOAT_GROUPS) -> list[str]:
    """The quantized encoder layers (names relative to the encoder) in ``groups``: before
    :func:`keep_float`, what it will make float."""
    return layers_in_groups(model.image_encoder, list(groups))


def kept_float(model: LiteMedSAM) -> list[str]:
    """The encoder layers a recipe model has kept float (after :func:`quantized_model`): the float
    convolutions and linears of the quantizable groups, as a checkpoint's structure records them."""
    quantized = quant_leaves(model.image_encoder)
    kinds = (torch.nn.Conv2d, torch.nn.Linear, torch.nn.ConvTranspose2d)
    return [n for n, m in model.image_encoder.named_modules()
            if isinstance(m, kinds) and n not in quantized and group_of(n) != "other"]


def quantized_model(weights: Path, images: list[torch.Tensor], alpha: float | None = ALPHA,
                    weight_bits: int = 8, groups=FLOAT_GROUPS) -> LiteMedSAM:
    """The int8 LiteMedSAM of this recipe, steps 1-3, calibrated on ``images``
    (``alpha=None``: without activation equalization), the layers of ``groups`` float.  The
    order (merge, equalize, float layers, calibrate) is the one a checkpoint's structure is
    rebuilt in (``training.qat.checkpoint.build_structure``)."""
    torch.manual_seed(0)
    model = build_lite_medsam(weights, replace(PTQ_CONFIG, weight_bits=weight_bits))
    merge_batchnorms(model.image_encoder)
    if alpha is not None:
        equalize_activations(model.image_encoder, images, alpha)
    keep_float(model.image_encoder, float_layers(model, groups))
    calibrate_encoder(model.image_encoder, images)
    return model


def post_training_quantize(weights: Path, n_calib: int, distill_steps: int = 0,
                           weight_bits: int = 8) -> tuple[LiteMedSAM, dict]:
    fmodel = build_lite_medsam(weights)
    fdec = fmodel.decoder()
    calib = calibration_set(n_calib)
    images = model_inputs(calib)
    sets = {m: make_eval_set(fmodel, pairs) for m, pairs in held_out_sets().items()}
    steps = []
    plain = quantized_model(weights, images, alpha=None, weight_bits=weight_bits)   # what equalization buys
    steps.append({"step": f"BatchNorm merged, per-channel {weight_bits}-bit weights, percentile calibration, "
                          f"float groups {', '.join(FLOAT_GROUPS) or 'none'}",
                  "held_out": agreement_by_modality(plain.image_encoder, fdec, sets)})
    del plain
    model = quantized_model(weights, images, weight_bits=weight_bits)
    layers = kept_float(model)
    enc = model.image_encoder
    current = agreement_by_modality(enc, fdec, sets)
    steps.append({"step": f"+ activation equalization (alpha {ALPHA})", "held_out": current})
    candidate = copy.deepcopy(enc)
    correct_bias(candidate, [(x,) for x in images[:BIAS_SLICES]])
    corrected = agreement_by_modality(candidate, fdec, sets)
    kept = corrected["mean"]["mask_dice"] > current["mean"]["mask_dice"]
    steps.append({"step": f"+ bias correction ({BIAS_SLICES} slices)", "held_out": corrected, "kept": kept})
    if kept:
        model.image_encoder, enc, current = candidate, candidate, corrected
    distilled = None
    if distill_steps > 0:
        distilled = distill(model, fmodel, [img for _, img in calib], distill_steps)
        current = agreement_by_modality(enc, fdec, sets)
        steps.append({"step": f"+ distillation ({distill_steps} steps)", "held_out": current})
    dec_pairs = labelled_pairs([z for z in range(2, 32, 4) if z not in EVAL_CT_SLICES], (1, 2))
    batches = decoder_calibration_batches(fmodel, dec_pairs)
    calibrate_decoder(model.decoder(), batches)
    correct_bias(model.decoder(), batches)
    model.eval()
    _, end_to_end = agreement(enc, model.decoder(), joined(sets["CT"], sets["Microscope"]))
    record = {
        "method": "post-training quantization with Brevitas: BatchNorm merge (merge_bn), "
                  "activation equalization (activation_equalization_mode, layerwise), activation "
                  "calibration (calibration_mode, percentile), bias correction (bias_correction_mode) "
                  "where it helps",
        "quantization": {
            "weights": f"{weight_bits}-bit symmetric, narrow range, per output channel (encoder and decoder)",
            "activations": "8-bit per tensor on the inputs of every conv/linear/transposed conv and on "
                           "the q/k/v, softmax, hypernetwork and upscaled-embedding operands; signed "
                           "symmetric, except unsigned for the [0,1] image and the softmax output",
            "float": "LayerNorm, GELU/ReLU, softmax, biases, residual additions, the prompt encoder, "
                     "the softmax output of the decoder's three token->image attentions (4,096 keys: "
                     "8-bit rounds nearly all probabilities to zero); encoder groups "
                     f"{', '.join(FLOAT_GROUPS)} ({len(layers)} layers; make bench-mixed)",
        },
        "calibration": {"encoder_slices": [n for n, _ in calib],
                        "decoder_images": len(batches),
                        "held_out_for_evaluation": {m: len(ev.images) for m, ev in sets.items()},
                        "source": "slicerio==1.4.0 CTChest4 (3 windows, 3 planes), stardist==0.9.2 "
                                  "nuclei 2D/3D, and (tools/modalities.py) nibabel==5.4.2, "
                                  "pydicom==3.0.2 and scikit-image==0.26.0 sample files",
                        "held_out_boxes": "CT and nuclei: their labels; other modalities: Otsu "
                                          "connected components (tools.modalities.structure_boxes)"},
        "encoder_steps": steps,
        "encoder_agreement": dict(current, metric="int8 encoder + float decoder vs float model on "
                                                  "held-out real boxes: mean mask Dice over all boxes "
                                                  "of each modality; embedding error = relative L2"),
        "float_layers": layers,
        "float_groups": list(FLOAT_GROUPS),
        "weight_bits": weight_bits,
        "encoder_distillation": distilled,
        "decoder_relative_logit_error": round(decoder_error(model.decoder(), fdec, batches), 4),
        "end_to_end_mask_dice_vs_float_on_held_out_ct_nuclei": round(end_to_end, 4),
    }
    return model, record
