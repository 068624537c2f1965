"""Student and teacher models for the three QAT stages.

Student: LiteMedSAM built with the export's quantization switch (per-channel
int8 weights on the encoder's convolutions with their BatchNorms merged, as in post-training
quantization; 8-bit inputs; the layers listed as float stay float).  Stage 1
trains the quantized image encoder under the float, frozen prompt encoder and
mask decoder (their quantizers are off); stage 2 turns the decoder's quantizers
on, calibrates them, and trains the decoder under the frozen stage-1 encoder;
stage 3 trains everything.  BatchNorm keeps its running statistics in every
stage (batches of 2-4 give useless batch statistics, and frozen statistics make
a DDP step equal to a single-process step over the combined batch).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from training.model.lite_medsam import LiteMedSAM, build_lite_medsam, load_state
from training.model.quant_switch import QuantConfig
from training.model.surgery import keep_float, layers_in_groups, merge_batchnorms, quant_leaves, set_quant_enabled

QAT_CONFIG = QuantConfig(enabled=True, weight_per_channel=True, range_aware_inputs=True)


def set_decoder_quant(model: LiteMedSAM, enabled: bool) -> None:
    for leaf in quant_leaves(model.mask_decoder).values():
        set_quant_enabled(leaf, enabled)


def build_student(weights: Path, float_groups, stage: int, init: dict | None = None) -> tuple[LiteMedSAM, list[str]]:
    """The quantized student with the named encoder groups (the
    groups of ``training.model.surgery.ENCODER_GROUPS``) in float; returns it and those layers' names."""
    model = build_lite_medsam(weights, QAT_CONFIG)
    merge_batchnorms(model.image_encoder)
    float_layers = layers_in_groups(model.image_encoder, float_groups)
    keep_float(model.image_encoder, float_layers)
    if init is not None:
        load_state(model, init)
    set_decoder_quant(model, stage >= 2)
    return model, float_layers


def trainable_parts(model: LiteMedSAM, stage: int) -> list[nn.Module]:
    return {1: [model.image_encoder], 2: [model.mask_decoder],
            3: [model.image_encoder, model.prompt_encoder, model.mask_decoder]}[stage]


def freeze_for_stage(model: LiteMedSAM, stage: int) -> list[nn.Parameter]:
    for p in model.parameters():
        p.requires_grad_(False)
    params = []
    for part in trainable_parts(model, stage):
        for p in part.parameters():
            p.requires_grad_(True)
            params.append(p)
    return params


def train_mode(model: nn.Module, stage: int) -> None:
    """Trainable parts in train mode, frozen parts and every BatchNorm in eval mode."""
    model.eval()
    for part in trainable_parts(model, stage):
        part.train()
    keep_batchnorm_statistics(model)


def keep_batchnorm_statistics(model: nn.Module) -> None:
    """Every BatchNorm in eval mode: training batches of 1-4 would spoil the running statistics."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


class StudentStep(nn.Module):
    """(images, boxes) -> (embeddings, logits): one module for DDP to wrap."""

    def __init__(self, model: LiteMedSAM):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, boxes: torch.Tensor):
        emb = self.model.image_encoder(images)
        return emb, self.model.decoder()(emb, boxes)


class Teacher(nn.Module):
    """Float LiteMedSAM (default), or MedSAM's ViT-B encoder with its own prompt encoder and decoder."""

    def __init__(self, weights: Path, medsam_checkpoint: Path | None = None):
        super().__init__()
        self.lite = build_lite_medsam(weights)
        self.vit = None
        if medsam_checkpoint is not None:
            from training.model.vit_b import ViTB

            state = torch.load(str(medsam_checkpoint), map_location="cpu", weights_only=True)
            self.vit = ViTB()
            self.vit.load_state_dict({k[len("image_encoder."):]: v for k, v in state.items()
                                      if k.startswith("image_encoder.")}, strict=True)
            for part in ("prompt_encoder", "mask_decoder"):
                getattr(self.lite, part).load_state_dict(
                    {k[len(part) + 1:]: v for k, v in state.items() if k.startswith(part + ".")}, strict=True)
        self.eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, boxes: torch.Tensor):
        if self.vit is not None:
            from training.model.vit_b import teacher_input

            emb = self.vit(teacher_input(images))
        else:
            emb = self.lite.image_encoder(images)
        return emb, self.lite.decoder()(emb, boxes)
