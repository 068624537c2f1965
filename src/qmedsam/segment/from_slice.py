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

import numpy as np

from qmedsam.image.masks import confidence_map, paste_mask
from qmedsam.image.preprocess import Geometry
from qmedsam.segment.propagate3d import prompt_from_logits
from qmedsam.segment.store import EmbeddingStore


@dataclass(frozen=True)
class StopRule:
    """A followed object ends on the first slice whose mask is empty, whose predicted IoU is below
    ``iou``, whose area is below ``area`` of the start slice's or above ``grow`` times the previous
    slice's (away from a lesion's largest slice it shrinks; a mask that grows has found a
    neighbour), or which overlaps the previous slice's mask by less than ``overlap`` (IoU of the two
    footprints: the prompt has jumped to another structure)."""

    iou: float = 0.5
    area: float = 0.1
    grow: float = float("inf")
    overlap: float = 0.0


DEFAULT_RULE = StopRule()


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
    down_prompt: np.ndarray | None = None
    alive_up: bool = True
    alive_down: bool = True
    reached: list = field(default_factory=list)   # slices it was pasted on

    def must_go(self, z: int) -> bool:
        return (self.must_hi is not None and z <= self.must_hi) or (self.must_lo is not None and z >= self.must_lo)


def _stops(track: Track, z: int, crop: np.ndarray, iou: float, rule: StopRule) -> bool:
    mask = crop > 0
    area = int(mask.sum())
    way = 1 if z >= track.z else -1
    if z == track.z:
        track.start_area, track.last = area, {1: mask, -1: mask}
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
        for s in range(0, len(active), predictor.max_boxes):
            logits, iou = predictor.decode(np.stack(prompts_now[s:s + predictor.max_boxes])[:, None, :])
            for k, t in enumerate(active[s:s + predictor.max_boxes]):
                crop = predictor.crop(logits[k, 0])
                if _stops(t, z, crop, float(iou[k]), rule):
                    yield t, None
                    continue
                if z not in best:
                    best[z] = confidence_map(seg.shape[1:], np.float16)
                paste_mask(seg[z], crop, t.label, best[z])
                t.reached.append(z)
                if written is not None:
                    written[z] = True
                nxt = prompt_from_logits(crop)
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
