"""A volume from one slice: objects followed both ways from the slice they were prompted on.

Each :class:`Track` starts from a box on its slice (a RECIST line's square, an interactive round's
middle-slice box, a click's box) and is followed up, then down, slice by slice; on each further
slice the prompt is the bounding box of the previous slice's mask (widened as the baseline's
propagation).  All tracks share one upward and one downward sweep, so a slice is encoded once
whatever the number of objects on it (the upward sweep keeps, in a bounded store, the embeddings
the downward one needs).  A track stops where the object ends, by :class:`StopRule`; the values
were chosen with ``make bench-prompts`` (docs/decisions/prompts.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from qmedsam.image.masks import confidence_map, paste_mask, positive_bounds
from qmedsam.image.preprocess import MODEL_SIZE, Geometry
from qmedsam.segment.store import EmbeddingStore


@dataclass(frozen=True)
class StopRule:
    """A followed object ends on the first slice whose mask is empty, whose predicted IoU is below
    ``iou``, whose area is below ``area`` of the start slice's or above ``grow`` times the previous
    slice's (away from a lesion's largest slice it shrinks; a mask that grows has found a
    neighbour), or which overlaps the previous slice's mask by less than ``overlap`` (IoU of the two
    footprints: the prompt has jumped to another structure), or whose mean intensity is more than
    ``contrast`` standard deviations of the start slice's mask away from that mask's mean (the
    mask has left the object's tissue)."""

    iou: float = 0.5
    area: float = 0.1
    grow: float = 1.2
    overlap: float = 0.4
    contrast: float = 0.75
    drift: bool = False       # compare the intensity with the previous slice's mask instead of the start's


DEFAULT_RULE = StopRule()
# px in 256-space around the previous slice's mask for the next slice's box: the baseline's
# propagation widens by 3, which is most of a small lesion's size (chosen with make tune-prompts)
FOLLOW_MARGIN = 3.0


def next_prompt(crop: np.ndarray) -> np.ndarray | None:
    """The next slice's box: the mask's bounds widened by :data:`FOLLOW_MARGIN`; None if empty."""
    bounds = positive_bounds(crop)
    if bounds is None:
        return None
    r0, r1, c0, c1 = bounds
    m = FOLLOW_MARGIN
    return np.clip(np.asarray([c0 - m, r0 - m, c1 + m, r1 + m], np.float32), 0, MODEL_SIZE)


@dataclass
class Track:
    label: int
    z: int                      # the start slice
    box: np.ndarray             # (4,) float32 prompt on slice z, in 256-space
    lo: int                     # the slices it may reach, inclusive
    hi: int
    must_lo: int | None = None  # not stopped before reaching these (a click's slice); an empty
    must_hi: int | None = None  # mask on the way keeps the previous prompt
    start_area: int = 0
    last: dict = field(default_factory=dict)      # +1 / -1: the previous slice's mask going up / down
    tissue: tuple = (0.0, 1.0)                    # mean and std of the start slice's masked pixels
    down_prompt: np.ndarray | None = None
    alive_up: bool = True
    alive_down: bool = True
    reached: list = field(default_factory=list)   # slices it was pasted on

    def must_go(self, z: int) -> bool:
        return (self.must_hi is not None and z <= self.must_hi) or (self.must_lo is not None and z >= self.must_lo)


def _stops(track: Track, z: int, crop: np.ndarray, iou: float, rule: StopRule, pixels) -> bool:
    """Whether ``track`` ends on slice ``z`` with mask logits ``crop`` (the valid window) and IoU
    ``iou``; ``pixels()``: the slice in the same window and frame."""
    mask = crop > 0
    area = int(mask.sum())
    way = 1 if z >= track.z else -1
    if z == track.z:
        track.start_area, track.last = area, {1: mask, -1: mask}
        if area and rule.contrast != float("inf"):
            values = pixels()[mask]
            track.tissue = (float(values.mean()), max(float(values.std()), 1.0))
        return area == 0 and not track.must_go(z)
    last = track.last.get(way)
    if track.must_go(z):
        if area:
            track.last[way] = mask
        return False
    if area == 0 or iou < rule.iou or area < rule.area * track.start_area:
        return True
    if last is not None:
        before = int(last.sum())
        if area > rule.grow * before:
            return True
        if rule.overlap and (mask & last).sum() < rule.overlap * (mask | last).sum():
            return True
    if rule.contrast != float("inf"):
        values = pixels()[mask]
        if abs(values.mean() - track.tissue[0]) > rule.contrast * track.tissue[1]:
            return True
        if rule.drift:
            track.tissue = (float(values.mean()), max(float(values.std()), 1.0))
    track.last[way] = mask
    return False


class SliceSource:
    """Embeddings of a case's slices for the sweeps: from the store, or encoded (once) by the run."""

    def __init__(self, run, budget: int):
        self.run, self.store = run, EmbeddingStore(budget)

    def get(self, z: int) -> np.ndarray:
        emb = self.store.pop(z)
        if emb is None:
            for _, emb in self.run.slices([z], overlap=False):
                pass
        return emb


def follow(run, tracks: list[Track], seg: np.ndarray, rule: StopRule | None = None, source: SliceSource | None = None,
           written: np.ndarray | None = None) -> None:
    """Paste each track's masks into ``seg`` (D, H, W) under its label, stopping by ``rule``; where two
    tracks claim a pixel the higher logit wins.  ``written`` (D,) bool, if given, marks the slices
    written to."""
    if not tracks:
        return
    rule = rule or DEFAULT_RULE
    geo = Geometry(*run.case.image.shape[1:])
    source = source or SliceSource(run, run.opts.store_budget)
    best: dict[int, np.ndarray] = {}
    predictor = run.predictor
    down_from = max(t.z for t in tracks)

    def decode(z, active, prompts_now, emb):
        predictor.set_embedding(emb, geo)
        seen = []

        def pixels():                     # the slice in the model's frame, as the encoder saw it
            if not seen:
                h, w = geo.resized
                seen.append(cv2.resize(run.case.image[z], (w, h), interpolation=cv2.INTER_AREA).astype(np.float32))
            return seen[0]

        for s in range(0, len(active), predictor.max_boxes):
            logits, iou = predictor.decode(np.stack(prompts_now[s:s + predictor.max_boxes])[:, None, :])
            for k, t in enumerate(active[s:s + predictor.max_boxes]):
                crop = predictor.crop(logits[k, 0])
                if _stops(t, z, crop, float(iou[k]), rule, pixels):
                    yield t, None
                    continue
                if z not in best:
                    best[z] = confidence_map(seg.shape[1:], np.float16)
                paste_mask(seg[z], crop, t.label, best[z])
                t.reached.append(z)
                if written is not None:
                    written[z] = True
                nxt = next_prompt(crop)
                yield t, nxt if nxt is not None else prompts_now[k + s]

    try:
        prompts = {id(t): t.box for t in tracks}
        for z in range(min(t.z for t in tracks), max(t.hi for t in tracks) + 1):
            active = [t for t in tracks if t.alive_up and t.z <= z <= t.hi]
            if not active:
                continue
            emb = source.get(z)
            if any(t.lo <= z < t.z for t in tracks):          # the downward sweep comes here too
                source.store.put(z, emb)
            for t, nxt in decode(z, active, [prompts[id(t)] for t in active], emb):
                if nxt is None:
                    t.alive_up = False
                    t.alive_down = t.alive_down and z != t.z       # nothing on its own slice: done
                elif z == t.z:
                    t.down_prompt = nxt
                if nxt is not None:
                    prompts[id(t)] = nxt
        for t in tracks:
            prompts[id(t)] = t.down_prompt
        for z in range(down_from - 1, min(t.lo for t in tracks) - 1, -1):
            active = [t for t in tracks if t.alive_down and t.down_prompt is not None and t.lo <= z < t.z]
            if not active:
                continue
            emb = source.get(z)
            for t, nxt in decode(z, active, [prompts[id(t)] for t in active], emb):
                if nxt is None:
                    t.alive_down = False
                else:
                    prompts[id(t)] = nxt
    finally:
        source.store.close()
