"""LiteMedSAM = TinyViT encoder + SAM prompt encoder + SAM mask decoder."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from training.model.mask_decoder import MaskDecoder
from training.model.prompt_encoder import PromptEncoder
from training.model.quant_switch import FLOAT, QuantConfig
from training.model.tiny_vit import TinyViT


class BoxDecoder(nn.Module):
    """Prompt encoder + mask decoder as one graph: (embedding (1|B,256,64,64), boxes (B,1,4)) -> logits."""

    def __init__(self, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder):
        super().__init__()
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    def forward(self, image_embedding: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return self.forward_with_iou(image_embedding, boxes)[0]

    def forward_with_iou(self, image_embedding, boxes):
        sparse, dense = self.prompt_encoder(boxes)
        pe = self.prompt_encoder.dense_pe()
        return self.mask_decoder(image_embedding, pe, sparse, dense)


class LiteMedSAM(nn.Module):
    def __init__(self, q: QuantConfig = FLOAT, quantize_decoder: bool | None = None):
        super().__init__()
        self.quant = q
        dq = q if quantize_decoder is None or quantize_decoder else FLOAT
        self.image_encoder = TinyViT(q)
        self.prompt_encoder = PromptEncoder()          # always float
        self.mask_decoder = MaskDecoder(dq)

    def decoder(self) -> BoxDecoder:
        return BoxDecoder(self.prompt_encoder, self.mask_decoder)

    def forward(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """image (N,3,256,256) with one box per image (N,1,4) -> logits (N,1,256,256)."""
        emb = self.image_encoder(image)
        return self.decoder()(emb, boxes)


def load_state(model: nn.Module, state: dict, strict: bool = True) -> None:
    """Load a LiteMedSAM state_dict; for quantized builds, quantizer parameters may be absent."""
    if not model.quant.enabled:
        model.load_state_dict(state, strict=strict)
        return
    result = model.load_state_dict(state, strict=False)
    foreign = [k for k in result.missing_keys if "_quant" not in k]
    if result.unexpected_keys or (strict and foreign):
        raise RuntimeError(f"state_dict mismatch: missing {foreign[:5]}, "
                           f"unexpected {result.unexpected_keys[:5]}")


def build_lite_medsam(checkpoint: str | Path | None = None, q: QuantConfig = FLOAT) -> LiteMedSAM:
    model = LiteMedSAM(q)
    if checkpoint is not None:
        state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        load_state(model, state)
    return model.eval()


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for n, p in module.named_parameters() if "_quant" not in n)
