"""Where an exported model comes from: the pretrained float LiteMedSAM, the post-training recipe
(``training.ptq_recipe``), or a QAT checkpoint (``make train-all``, ``make qat-distill``).  Each
source gives the model, the float model the runtime's decoder graphs are made from, and a record of
how it was made for the manifest."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from tools.weights import sha256_of
from training.model.lite_medsam import LiteMedSAM, build_lite_medsam

PRETRAINED_FLOAT = "the pretrained float weights"


@dataclass
class ModelSource:
    model: LiteMedSAM              # quantized (int8 sources) or float
    decoder_model: LiteMedSAM      # float: what the runtime's decoder graphs are exported from
    decoder_weights: str           # where those came from, in words (the manifest's runtime_decoder)
    record: dict                   # how the model was made


def checkpoint_record(weights: Path) -> dict:
    return {"path": weights.name, "sha256": sha256_of(weights)}


def pretrained(weights: Path) -> ModelSource:
    model = build_lite_medsam(weights)
    return ModelSource(model, model, PRETRAINED_FLOAT, {"precision": "fp32", "source_checkpoint":
                                                        checkpoint_record(weights)})


def post_training(weights: Path, n_calib: int, distill_steps: int = 0, weight_bits: int = 8) -> ModelSource:
    """The post-training recipe on ``n_calib`` public calibration slices."""
    from training.ptq_recipe import post_training_quantize

    model, record = post_training_quantize(weights, n_calib, distill_steps, weight_bits)
    return ModelSource(model, build_lite_medsam(weights), PRETRAINED_FLOAT, record)


def qat_checkpoint(ckpt: Path) -> ModelSource:
    """The quantized model a QAT checkpoint holds (``training.qat.checkpoint``); its decoder graphs
    come from the checkpoint's own (float) decoder weights."""
    from training.qat.checkpoint import rebuild

    blob = torch.load(str(ckpt), map_location="cpu", weights_only=False)
    model, structure = rebuild(blob)
    record = {"method": "qat", "qat_checkpoint": {"path": str(ckpt), "sha256": sha256_of(ckpt)},
              "structure": structure.as_dict(), "float_layers": list(structure.float_layers),
              "stages": blob.get("stages"), "distillation": blob.get("distillation")}
    if record["distillation"] is not None:       # make qat-distill's run: its time, from the log beside it
        from training.qat.distill import logged_seconds

        record["distillation"] = dict(record["distillation"],
                                      training_seconds=logged_seconds(ckpt.parent / "log.jsonl"))
    return ModelSource(model, float_copy(model), "the QAT checkpoint's weights", record)


def float_copy(model: LiteMedSAM) -> LiteMedSAM:
    """A float LiteMedSAM with a (possibly quantized) model's prompt encoder and mask decoder,
    quantizer state dropped: what the factored decoder graphs are made from.  The image encoder
    is not copied (a quantized one may have merged BatchNorms and equalization scales) and keeps
    its initial values."""
    parts = ("prompt_encoder.", "mask_decoder.")
    state = {k: v for k, v in model.state_dict().items() if "_quant" not in k and k.startswith(parts)}
    fmodel = LiteMedSAM()
    missing, unexpected = fmodel.load_state_dict(state, strict=False)
    missing = [k for k in missing if k.startswith(parts)]
    if missing or unexpected:
        raise RuntimeError(f"float copy: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return fmodel.eval()
