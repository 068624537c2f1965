"""LiteMedSAM: TinyViT image encoder, SAM prompt encoder, SAM mask decoder."""
from training.model.lite_medsam import LiteMedSAM, build_lite_medsam
from training.model.quant_switch import QuantConfig

__all__ = ["LiteMedSAM", "build_lite_medsam", "QuantConfig"]
