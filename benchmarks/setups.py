"""A benchmark row's setup: a model and the plan it runs every case with (which encoder; guarded or not)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from qmedsam.model.model import Model, ModelSettings
from qmedsam.model.spec import ENCODER, ENCODER_FLOAT
from qmedsam.precision.policy import Plan
from qmedsam.segment.case_run import segment_case
from qmedsam.segment.options import SegmentOptions


@dataclass(frozen=True)
class Setup:
    model: Model
    plan: Plan

    @staticmethod
    def open(folder: Path, float_ops: str = "auto", encoder: str = ENCODER.name, guard: bool = False,
             windows: bool = True, cache: Path | None = None) -> "Setup":
        """``folder``'s model, its encoder ``encoder`` first; ``guard``: probed by the float encoder."""
        settings = ModelSettings(cache, float_ops=float_ops, encoder=encoder,
                                 also=ENCODER_FLOAT.name if guard else None, windows=windows)
        return Setup(Model(folder, settings), Plan(encoder, guard, "benchmark", "int8+guard" if guard else encoder))

    def running(self, encoder: str) -> "Setup":
        """The same model running ``encoder`` unguarded."""
        return replace(self, plan=Plan(encoder, False, "benchmark", encoder))

    def encode(self, x: np.ndarray) -> np.ndarray:
        return self.model.encode(x, self.plan.encoder)[0]

    def logits(self, embedding: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Low-res logits (B, 1, 256, 256) of boxes (B, 1, 4) against one embedding."""
        return self.model.decode(self.model.prepare(embedding), boxes)[0]

    def segment(self, case, opts: SegmentOptions = SegmentOptions()):
        """(label map, ledger) of a checked case, with the product's segmenting defaults unless told."""
        return segment_case(case, self.model, self.plan, opts)
