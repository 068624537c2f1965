"""A QAT stage's configuration (``training/configs/stageN.json``) and its learning-rate schedule."""
from __future__ import annotations

import json
import math
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def load_config(stage: int, path: Path | None = None, epochs: int | None = None,
                samples: int | str | None = None) -> dict:
    cfg = json.loads((path or CONFIGS / f"stage{stage}.json").read_text())
    if epochs is not None:          # short runs: keep the warm-up/cosine shape, scaled down
        warm = epochs // 3 if epochs >= 3 else 0
        cfg["schedule"].update(warmup_epochs=warm, cosine_epochs=epochs - warm)
    if samples is not None:
        cfg["sampling"]["per_modality"] = samples
    return cfg


def lr_factor(step: int, steps_per_epoch: int, sched: dict) -> float:
    """Linear warm-up from warmup_start_fraction, then cosine down to final_fraction (per step)."""
    e = step / max(steps_per_epoch, 1)
    warm, cos = sched["warmup_epochs"], sched["cosine_epochs"]
    if e < warm:
        s0 = sched["warmup_start_fraction"]
        return s0 + (1 - s0) * e / warm
    t = min((e - warm) / max(cos, 1e-9), 1.0)
    f = sched["final_fraction"]
    return f + (1 - f) * 0.5 * (1 + math.cos(math.pi * t))


def epochs_of(cfg) -> int:
    return int(cfg["schedule"]["warmup_epochs"] + cfg["schedule"]["cosine_epochs"])
