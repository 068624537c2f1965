"""The fixed 3D mode: each box's xy extent on every slice of its z range (the paper's), each slice encoded once."""
from __future__ import annotations

import numpy as np

from qmedsam.image.masks import confidence_map, paste_mask
from qmedsam.image.preprocess import Geometry, boxes_to_model
from qmedsam.segment.plan3d import box_xy, fixed_plan


def segment_fixed(run) -> np.ndarray:
    """The label map of ``run``'s volume; the slices the guard's probes decoded (from the float
    embedding) are pasted as they are."""
    case, predictor = run.case, run.predictor
    seg = np.zeros(case.label_shape, dtype=case.label_dtype)
    if len(case.boxes) == 0:
        return seg
    geo = Geometry(*case.image.shape[1:])
    boxes256 = boxes_to_model(box_xy(case.boxes), geo)
    plan = fixed_plan(case.boxes)
    run.ledger.planned = len(plan)
    best = confidence_map(seg.shape[1:])           # each slice is visited once: one map, reset
    slices = run.interpolating_slices(list(plan)) if run.opts.interpolate > 0 else run.slices(plan)
    for z, emb in slices:
        idx = np.asarray(plan[z])
        best.fill(0)
        if z in run.decoded:
            for i, crop in zip(idx, run.decoded.pop(z)):
                paste_mask(seg[z], crop, int(i) + 1, best)
        else:
            predictor.set_embedding(emb, geo).paste(boxes256[idx], idx + 1, seg[z], best)
    return seg
