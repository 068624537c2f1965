"""Where a QAT stage keeps its files, and what its checkpoints hold."""
from __future__ import annotations

from pathlib import Path

import torch

from qmedsam.cases.atomic import replacing
from training.qat.checkpoint import Structure, student_record
from training.qat.student import QAT_CONFIG


def stage_dir(out: Path, stage: int) -> Path:
    return out / f"stage{stage}"


def previous_best(out: Path, stage: int) -> dict | None:
    if stage == 1:
        return None
    path = stage_dir(out, stage - 1) / "best.pt"
    if not path.is_file():
        raise FileNotFoundError(f"stage {stage} starts from {path}; run stage {stage - 1} first")
    return torch.load(str(path), map_location="cpu", weights_only=False)["model"]


def export_record(model, float_layers, cfg, history, best) -> dict:
    """A stage checkpoint: the student's state and structure (``training.qat.checkpoint``) and the
    stage's history; ``make export CKPT=`` reads any of them."""
    structure = Structure(weight_per_channel=QAT_CONFIG.weight_per_channel,
                          range_aware_inputs=QAT_CONFIG.range_aware_inputs, merged_batchnorms=True,
                          float_layers=tuple(float_layers))
    return student_record(model, structure, stages={"stage": cfg["stage"], "config": cfg, "best": best,
                                                    "history": history})


def save_checkpoint(blob: dict, path: Path) -> None:
    with replacing(path) as tmp:
        torch.save(blob, tmp)
