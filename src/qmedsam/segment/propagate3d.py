"""The propagation 3D modes: the baseline's (``propagate``) and one kept near the box (``guided``).

Sweep up from each box's middle slice, keeping the embeddings the downward sweep will need (a
bounded store), then sweep down: every slice is encoded once.  A step's prompt is the previous
slice's low-res mask box widened by 3 px, or the middle-slice box where that mask is empty.
Guided: the propagated prompt is clipped to the 3D box's xy extent, and on every slice the
decoder's IoU prediction picks between it and the fixed box (:func:`guided_step`).
"""
from __future__ import annotations

import numpy as np

from qmedsam.image.masks import confidence_map, paste_mask, positive_bounds
from qmedsam.image.preprocess import MODEL_SIZE, Geometry, boxes_to_model
from qmedsam.segment.plan3d import box_xy, propagation_plan
from qmedsam.segment.store import EmbeddingStore

PROPAGATION_MARGIN = 3          # px in 256-space, as the baseline
# Guided mode (measured on the two sample volumes, int8, mean DSC over CT + 3D nuclei; fixed
# 0.5072): 3 px margin, plain IoU choice 0.4799; 10 % margin 0.4880; 10 % margin without the
# choice (propagation clipped to the box) 0.4663; 20 % margin, IoU margin 0.05: 0.5047.
GUIDED_MARGIN = 0.2             # of the previous mask's size, per axis
GUIDED_IOU_MARGIN = 0.05        # the propagated prompt's mask must be predicted this much better


def prompt_from_logits(crop: np.ndarray, limit: np.ndarray | None = None) -> np.ndarray | None:
    """Bounding box of a low-res mask in 256-space, widened by the margin; None if empty.
    With ``limit`` (the guided mode: a box in 256-space) the margin is also at least
    ``GUIDED_MARGIN`` of the mask's size on each axis, and the box is clipped to ``limit``."""
    bounds = positive_bounds(crop)
    if bounds is None:
        return None
    r0, r1, c0, c1 = bounds
    mx = my = PROPAGATION_MARGIN
    if limit is not None:
        mx, my = max(mx, GUIDED_MARGIN * (c1 - c0 + 1)), max(my, GUIDED_MARGIN * (r1 - r0 + 1))
    box = np.clip(np.asarray([c0 - mx, r0 - my, c1 + mx, r1 + my], dtype=np.float32), 0, MODEL_SIZE)
    return box if limit is None else clip_box(box, limit)


def clip_box(box: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """``box`` (x0, y0, x1, y1) intersected with ``limit``; where they do not overlap, ``limit``."""
    out = np.concatenate([np.maximum(box[:2], limit[:2]), np.minimum(box[2:], limit[2:])]).astype(np.float32)
    return out if (out[2] > out[0] and out[3] > out[1]) else limit.astype(np.float32)


def guided_step(predictor, prompts, fixed, labels, seg, best) -> list:
    """The guided step on one slice: each box's propagated prompt and, where it differs, its fixed
    box are decoded; the fixed box's mask is pasted unless the decoder predicts the propagated
    one's IoU higher by ``GUIDED_IOU_MARGIN``.  Returns each box's next prompt: the pasted mask's
    box, widened and clipped to the fixed box (None if empty)."""
    following = []
    group = max(1, predictor.max_boxes // 2)          # <= max_boxes candidates per decoder call
    for g in range(0, len(prompts), group):
        p, f = prompts[g:g + group], fixed[g:g + group]
        differs = np.flatnonzero(np.any(np.abs(p - f) > 0.5, axis=1))
        cand = np.concatenate([p, f[differs]])
        logits, iou = predictor.decode(cand[:, None, :])
        pick = np.arange(len(p))
        for j, i in enumerate(differs):          # the fixed box wins unless clearly worse
            if iou[i] <= iou[len(p) + j] + GUIDED_IOU_MARGIN:
                pick[i] = len(p) + j
        for i, k in enumerate(pick):
            crop = predictor.crop(logits[k, 0])
            paste_mask(seg, crop, int(labels[g + i]), best)
            following.append(prompt_from_logits(crop, f[i]))
    return following


def _sweep(predictor, steps, prompts, rows, base, geo, seg, best, guided, keep=None, middle=None,
           middle_to=None) -> None:
    """Decode each slice's boxes (``rows[z]``) with their current ``prompts``, updating them from the
    masks; ``keep(z, embedding)`` sees each slice's embedding; ``middle_to`` receives each box's
    prompt at its ``middle`` slice (where the downward chain starts)."""
    for z, emb in steps:
        if keep is not None:
            keep(z, emb)
        idx = np.asarray(rows[z])
        predictor.set_embedding(emb, geo)
        if guided:
            following = guided_step(predictor, prompts[idx], base[idx], idx + 1, seg[z], best[z])
        else:
            following = predictor.paste(prompts[idx][:, None, :], idx + 1, seg[z], best[z], follow=prompt_from_logits)
        for i, nxt in zip(idx, following):
            prompts[i] = base[i] if nxt is None else nxt
            if middle_to is not None and z == middle[i]:
                middle_to[i] = prompts[i]


def _descending(order, store: EmbeddingStore, fresh):
    """Walk ``order`` (descending z): stored embeddings are taken from the store when their turn
    comes (so spilled ones are loaded one at a time), others come fresh."""
    fresh = iter(fresh)
    for z in order:
        emb = store.pop(z)
        yield (z, emb) if emb is not None else next(fresh)


def segment_propagate(run, guided: bool = False) -> np.ndarray:
    """The label map of ``run``'s volume; the run's ``known`` embeddings (the guard's probes) are
    not encoded again."""
    case = run.case
    seg = np.zeros(case.label_shape, dtype=case.label_dtype)
    if len(case.boxes) == 0:
        return seg
    geo = Geometry(*case.image.shape[1:])
    base = boxes_to_model(box_xy(case.boxes), geo)[:, 0]
    plan = propagation_plan(case.boxes)
    run.ledger.planned = len(plan.slices)
    reused = plan.reused()
    # A slice is visited by both sweeps (different boxes): the confidence map covers the volume,
    # in f16 (2 bytes a voxel) since these modes are opt-in and a volume's map can be large.
    best = confidence_map(seg.shape, np.float16)
    prompt_up, prompt_down = base.copy(), base.copy()
    store = EmbeddingStore(run.opts.store_budget)

    def keep(z, emb):
        if z in reused:
            store.put(z, emb)

    try:
        _sweep(run.predictor, run.slices(plan.up), prompt_up, plan.up, base, geo, seg, best, guided, keep,
               plan.middle, prompt_down)
        fresh = run.slices([z for z in plan.down if z not in reused])
        _sweep(run.predictor, _descending(list(plan.down), store, fresh), prompt_down, plan.down, base, geo, seg,
               best, guided)
    finally:
        store.close()
    return seg
