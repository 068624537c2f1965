"""What a quantized student is made of, saved with its weights, and the one way back to a model.

Every checkpoint a QAT run writes (each epoch's, ``best.pt`` and the resumable ``last.pt``, and
those of ``make qat-distill``) holds ``model`` (the state) and ``structure``: the quantizer
settings and the graph changes made before training (BatchNorms merged, activation
equalization's scale nodes, layers kept float).  :func:`rebuild` repeats those changes on a
fresh model and loads the state, so ``make export CKPT=`` builds exactly what was trained.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from training.model.lite_medsam import LiteMedSAM, load_state
from training.model.quant_switch import QuantConfig


@dataclass(frozen=True)
class Structure:
    weight_per_channel: bool = True
    range_aware_inputs: bool = True
    merged_batchnorms: bool = True
    # SmoothQuant-style scale nodes in front of every encoder layer (training.ptq.equalize_activations)
    equalized: bool = False
    float_layers: tuple[str, ...] = field(default_factory=tuple)   # names relative to the encoder
    weight_bits: int = 8

    def config(self) -> QuantConfig:
        return QuantConfig(enabled=True, weight_per_channel=self.weight_per_channel,
                           range_aware_inputs=self.range_aware_inputs, weight_bits=self.weight_bits)

    def as_dict(self) -> dict:
        return dict(asdict(self), float_layers=list(self.float_layers))


def student_record(model: LiteMedSAM, structure: Structure, **extra) -> dict:
    """The checkpoint of a student: its state and structure, plus ``extra`` entries."""
    return {"model": model.state_dict(), "structure": structure.as_dict(), **extra}


def structure_of(blob: dict) -> Structure:
    """The structure a checkpoint records; for checkpoints written before it was recorded, read
    from the older ``quant`` entry or, failing that, from the state's keys."""
    if "structure" in blob:
        s = dict(blob["structure"])
        return Structure(**dict(s, float_layers=tuple(s.get("float_layers", ()))))
    state = blob.get("model", blob)
    quant = blob.get("quant")
    if quant is None:            # a resumable last.pt of the trainer before it recorded more
        merged = not any(k.endswith(".bn.running_mean") for k in state)
        quant = {"weight_per_channel": merged, "range_aware_inputs": merged, "merged_batchnorms": merged}
    return Structure(weight_per_channel=quant.get("weight_per_channel", blob.get("weight_per_channel", False)),
                     range_aware_inputs=quant.get("range_aware_inputs", False),
                     merged_batchnorms=quant.get("merged_batchnorms", False),
                     equalized=any(".scale." in k for k in state if k.startswith("image_encoder.")),
                     float_layers=tuple(blob.get("float_layers", ())))


def build_structure(structure: Structure) -> LiteMedSAM:
    """A quantized LiteMedSAM with ``structure``'s graph changes and initial values."""
    from training.model.surgery import keep_float, merge_batchnorms

    model = LiteMedSAM(structure.config())
    if structure.merged_batchnorms:
        merge_batchnorms(model.image_encoder)
    if structure.equalized:
        from training.ptq import equalize_activations

        # The scale nodes' places depend only on the graph; their values come from the state.
        equalize_activations(model.image_encoder, [torch.rand(1, 3, 256, 256)], alpha=0.5)
    keep_float(model.image_encoder, list(structure.float_layers))
    return model


def rebuild(blob: dict) -> tuple[LiteMedSAM, Structure]:
    """The model a checkpoint holds (eval mode) and its structure."""
    structure = structure_of(blob)
    model = build_structure(structure)
    state = blob.get("model", blob)
    _add_corrected_biases(model, state)
    load_state(model, state)
    return model.eval(), structure


def _add_corrected_biases(model: torch.nn.Module, state: dict) -> None:
    """Bias correction (``training.ptq.correct_bias``) gives bias-less layers a bias: give the
    rebuilt layers one where the state has it."""
    for key in state:
        if not key.endswith(".bias"):
            continue
        owner = model.get_submodule(key[:-len(".bias")])
        if getattr(owner, "bias", False) is None and hasattr(owner, "weight"):
            owner.bias = torch.nn.Parameter(torch.zeros(owner.weight.shape[0]))
