"""Segmenting one case: 2D images, and 3D volumes in 'fixed', 'propagate' or 'guided' mode."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from qmedsam import int8_guard, policy
from qmedsam.cases import Case, box_xy, modality_of
from qmedsam.embedding_store import EmbeddingStore
from qmedsam.image_session import EngineLike, ImageSession, Target
from qmedsam.int8_guard import Verdict
from qmedsam.ledger import Ledger
from qmedsam.masks import confidence_map, paste_mask, positive_bounds
from qmedsam.model_spec import ENCODER
from qmedsam.plan3d import fixed_plan, propagation_plan
from qmedsam.preprocess import (MODEL_SIZE, Geometry, boxes_to_canvas, boxes_to_model, canvas_to_tensor,
                                image_to_tensor)
from qmedsam.slice_interpolation import between, gap_slices
from qmedsam.zoom import MAX_CROPS, zoom_canvases

PROPAGATION_MARGIN = 3          # px in 256-space, as the baseline
# Guided 3D mode (measured on the two sample volumes, int8, mean DSC over CT + 3D nuclei; fixed
# 0.5072): 3 px margin, plain IoU choice 0.4799; 10 % margin 0.4880; 10 % margin without the
# choice (propagation clipped to the box) 0.4663; 20 % margin, IoU margin 0.05: 0.5047.
GUIDED_MARGIN = 0.2             # of the previous mask's size, per axis
GUIDED_IOU_MARGIN = 0.05        # the propagated prompt's mask must be predicted this much better


@dataclass
class Options:
    max_boxes: int = 8
    mode_3d: str = "fixed"
    store_budget: int = 512 * 2**20
    overlap: bool = True
    zoom_crops: int = MAX_CROPS        # 2D: at most this many crops for small boxes (0: no zoom)
    # --precision auto: the precision policy plans each case (qmedsam.policy): the float encoder,
    # or int8 probed first by the guard (qmedsam.int8_guard) and run in float where it departs
    guard: bool = False
    plan: policy.Plan | None = None    # a plan to follow instead of the policy's (tests, benchmarks)
    # 3D fixed mode: a slice between two encoded ones takes their mean embedding when they differ
    # by less than this (qmedsam.slice_interpolation; 0: every slice encoded)
    interpolate: float = 0.0


@dataclass
class Stats:
    decoder_calls: int = 0
    encoded: list[int] = field(default_factory=list)     # slice indices, in encoding order
    crops_encoded: int = 0                                # 2D zoom canvases (encoder passes)
    first_embedding_at: float | None = None               # time.perf_counter() of the first embedding
    verdict: Verdict | None = None                        # the guard's choice of encoder, if it ran
    boxes_decoded: int = 0
    planned: int = 0                                      # encoder passes the case will take (0: unknown)
    interpolated: list[int] = field(default_factory=list)  # slices given their neighbours' mean embedding
    progress: Callable[["Stats"], None] | None = None     # told as the work goes on (qmedsam.progress)
    ledger: Ledger = field(default_factory=Ledger)        # where the case's seconds went

    def tick(self) -> None:
        if self.progress is not None:
            self.progress(self)

    @property
    def slices_encoded(self) -> int:
        return len(self.encoded)

    @property
    def encoder_passes(self) -> int:
        return len(self.encoded) + self.crops_encoded

    @property
    def images_done(self) -> int:
        """Images with an embedding so far: encoder passes and interpolated slices."""
        return self.encoder_passes + len(self.interpolated)

    def note_embedding(self) -> None:
        if self.first_embedding_at is None:
            self.first_embedding_at = time.perf_counter()

    def note_encoded(self, z: int) -> None:
        self.note_embedding()
        self.encoded.append(z)
        self.tick()


@dataclass
class CaseRun:
    """One case's run: what every image of it is encoded and decoded with (the engine, the
    options), its counters and ledger (``stats``), and what the guard's probes left for it:
    embeddings of slices already encoded (``known``) and masks already decoded (``decoded``),
    each taken out as it is used.  The 2D, zoom and 3D modes are plans over its sessions."""

    case: Case
    engine: EngineLike
    opts: Options
    stats: Stats
    known: dict[int, np.ndarray] = field(default_factory=dict)
    decoded: dict[int, list[np.ndarray]] = field(default_factory=dict)

    def session(self, embedding: np.ndarray, last: bool = False) -> ImageSession:
        """A decoding session on ``embedding``; ``last``: no other image of the case follows."""
        return ImageSession(self.engine, self.opts.max_boxes, self.stats).set_image(embedding, last)

    def encoded(self, tensors, overlap: bool | None = None):
        """Yield (i, embedding) for the model inputs made by ``tensors`` (callables) in order; with
        overlap (the option, by default) the next input is encoded while the caller decodes the
        current one."""
        overlap = self.opts.overlap if overlap is None else overlap
        engine = self.engine

        def start(i):
            return engine.start_encode(tensors[i]())

        pending = start(0) if len(tensors) else None
        try:
            for i in range(len(tensors)):
                emb, pending = engine.finish_encode(pending), None
                more = i + 1 < len(tensors)
                if overlap and more:
                    pending = start(i + 1)
                yield i, emb
                if not overlap and more:
                    pending = start(i + 1)
        finally:                 # closed early (the case failed): the engine's request is free again
            if pending is not None:
                engine.finish_encode(pending)

    def slices(self, zs, overlap: bool | None = None):
        """Yield (z, embedding) for slices ``zs`` of the volume in order (see :meth:`encoded`); the
        slices in :attr:`known` are not encoded again."""
        volume, known = self.case.image, self.known
        zs = list(zs)
        fresh = [z for z in zs if z not in known]
        encoded = self.encoded([lambda z=z: image_to_tensor(volume[z])[0] for z in fresh], overlap)
        for z in zs:
            emb = known.pop(z) if z in known else next(encoded)[1]
            self.stats.note_encoded(z)
            yield z, emb

    def interpolating_slices(self, zs):
        """Yield (z, embedding) for every slice of ``zs``, the slices of
        :func:`~qmedsam.slice_interpolation.gap_slices` after their upper neighbour: their
        neighbours' mean where those agree within ``opts.interpolate``, else encoded (or known)."""
        gaps = gap_slices(zs)
        left = None
        for z, emb in self.slices([z for z in zs if z not in gaps]):
            yield z, emb
            if z - 1 in gaps:
                mean = None if z - 1 in self.known else between(left, emb, self.opts.interpolate)
                if mean is not None:
                    self.stats.interpolated.append(z - 1)
                    self.stats.tick()
                    yield z - 1, mean
                else:
                    yield from self.slices([z - 1], overlap=False)
            left = emb


def segment_2d(run: CaseRun) -> np.ndarray:
    """The image encoded once for its boxes; small boxes (see :mod:`qmedsam.zoom`) decoded
    against zoomed windows around them instead, packed into canvases, each canvas encoded once.
    After the case's last encoder pass and last per-image decoder step their scratch memory is
    freed (lower peak RSS: the organisers run one case per process)."""
    case, engine, opts, stats = run.case, run.engine, run.opts, run.stats
    seg = np.zeros(case.label_shape, dtype=case.label_dtype)
    if len(case.boxes) == 0:
        return seg
    best = confidence_map(seg.shape)
    canvases, plain = zoom_canvases(*seg.shape, case.boxes, opts.zoom_crops)
    stats.planned = int(len(plain) > 0) + len(canvases)
    if len(plain):
        tensor, geo = image_to_tensor(case.image)
        emb = engine.encode(tensor)
        stats.note_encoded(0)
        if not canvases:
            engine.release(ENCODER.name)
        run.session(emb, last=not canvases).paste(boxes_to_model(case.boxes[plain], geo), plain + 1,
                                                  Target(seg, best, geo))
    tensors = [lambda k=k: canvas_to_tensor(case.image, canvases[k]) for k in range(len(canvases))]
    for k, emb in run.encoded(tensors):
        last = k == len(canvases) - 1
        if last:
            engine.release(ENCODER.name)
        stats.crops_encoded += 1
        stats.note_embedding()
        stats.tick()
        _paste_canvas(run.session(emb, last), canvases[k], case.boxes, seg, best)
    return seg


def _paste_canvas(session: ImageSession, placed, boxes, seg, best) -> None:
    """Decode the boxes of every tile of one canvas; each mask is cut to its tile and pasted into
    the tile's window of ``seg``."""
    owners = [(p, i) for p in placed for i in p.tile.boxes]
    prompts = np.concatenate([boxes_to_canvas(boxes[list(p.tile.boxes)], p) for p in placed])
    for j, logits in session.masks(prompts):
        p, i = owners[j]
        t = p.tile
        h, w = t.size
        window = (slice(t.y0, t.y1), slice(t.x0, t.x1))
        paste_mask(seg[window], logits[p.y:p.y + h, p.x:p.x + w], int(i) + 1, best[window])


def segment_3d_fixed(run: CaseRun) -> np.ndarray:
    """The fixed mode: each box's xy extent on every slice of its z range.  The run's ``decoded``
    slices (the guard's probes, from the float embedding) are pasted as they are."""
    case, stats = run.case, run.stats
    seg = np.zeros(case.label_shape, dtype=case.label_dtype)
    if len(case.boxes) == 0:
        return seg
    geo = Geometry(*case.image.shape[1:])
    boxes256 = boxes_to_model(box_xy(case.boxes), geo)
    plan = fixed_plan(case.boxes)
    stats.planned = len(plan)
    best = confidence_map(seg.shape[1:])           # each slice is visited once: one map, reset
    slices = run.interpolating_slices(list(plan)) if run.opts.interpolate > 0 else run.slices(plan)
    for z, emb in slices:
        idx = np.asarray(plan[z])
        best.fill(0)
        target = Target(seg[z], best, geo)
        if z in run.decoded:
            for i, crop in zip(idx, run.decoded.pop(z)):
                target.paste(crop, int(i) + 1)
        else:
            run.session(emb).paste(boxes256[idx], idx + 1, target)
    return seg


def _prompt_from_logits(crop: np.ndarray, limit: np.ndarray | None = None) -> np.ndarray | None:
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


def _guided_step(session: ImageSession, prompts, fixed, labels, target: Target) -> list:
    """The guided step on one slice: each box's propagated prompt and, where it differs, its fixed
    box are decoded; the fixed box's mask is pasted unless the decoder predicts the propagated
    one's IoU higher by ``GUIDED_IOU_MARGIN``.  Returns each box's next prompt: the pasted mask's
    box, widened and clipped to the fixed box (None if empty)."""
    following = []
    group = max(1, session.max_boxes // 2)          # <= max_boxes candidates per decoder call
    for g in range(0, len(prompts), group):
        p, f = prompts[g:g + group], fixed[g:g + group]
        differs = np.flatnonzero(np.any(np.abs(p - f) > 0.5, axis=1))
        cand = np.concatenate([p, f[differs]])
        logits, iou = session.decode(cand[:, None, :], with_iou=True)
        pick = np.arange(len(p))
        for j, i in enumerate(differs):          # the fixed box wins unless clearly worse
            if iou[i] <= iou[len(p) + j] + GUIDED_IOU_MARGIN:
                pick[i] = len(p) + j
        for i, k in enumerate(pick):
            crop = target.paste(logits[k, 0], int(labels[g + i]))
            following.append(_prompt_from_logits(crop, f[i]))
    return following


def segment_3d_propagate(run: CaseRun, guided: bool = False) -> np.ndarray:
    """The baseline's propagation, with every slice encoded once.

    Sweep up from each box's middle slice, keeping the embeddings that the
    downward sweep will need (bounded store), then sweep down.  Each step's
    prompt is the previous slice's low-res mask box widened by 3 px, or the
    middle-slice box when that mask is empty.

    ``guided``: the propagated prompt is clipped to the 3D box's xy extent, and on every slice
    the decoder's IoU prediction picks between it and the fixed box (:func:`_guided_step`).
    The run's ``known`` embeddings (the guard's probes) are not encoded again.
    """
    case, opts, stats = run.case, run.opts, run.stats
    seg = np.zeros(case.label_shape, dtype=case.label_dtype)
    if len(case.boxes) == 0:
        return seg
    geo = Geometry(*case.image.shape[1:])
    base = boxes_to_model(box_xy(case.boxes), geo)[:, 0]
    plan = propagation_plan(case.boxes)
    stats.planned = len(plan.slices)
    reused = plan.reused()
    # A slice is visited by both sweeps (different boxes): the confidence map covers the volume,
    # in f16 (2 bytes a voxel) since these modes are opt-in and a volume's map can be large.
    best = confidence_map(seg.shape, np.float16)
    prompt_up = base.copy()
    prompt_down = base.copy()
    store = EmbeddingStore(opts.store_budget)
    try:
        def sweep(steps, prompts, rows, keep, middle_to=None):
            """Decode each slice's boxes (``rows[z]``) with their current ``prompts``, updating
            them from the masks; ``middle_to`` receives each box's prompt at its middle slice."""
            for z, emb in steps:
                if keep(z):
                    store.put(z, emb)
                idx = np.asarray(rows[z])
                session, target = run.session(emb), Target(seg[z], best[z], geo)
                if guided:
                    following = _guided_step(session, prompts[idx], base[idx], idx + 1, target)
                else:
                    following = session.paste(prompts[idx][:, None, :], idx + 1, target, follow=_prompt_from_logits)
                for i, nxt in zip(idx, following):
                    prompts[i] = base[i] if nxt is None else nxt
                    if middle_to is not None and z == plan.middle[i]:
                        middle_to[i] = prompts[i]       # the downward chain starts from the middle mask

        sweep(run.slices(plan.up), prompt_up, plan.up,
              lambda z: z in reused, middle_to=prompt_down)
        fresh = [z for z in plan.down if z not in reused]
        down_steps = _merge_descending(list(plan.down), store,
                                       run.slices(fresh))
        sweep(down_steps, prompt_down, plan.down, lambda z: False)
    finally:
        store.close()
    return seg


def _merge_descending(order, store: EmbeddingStore, fresh_iter):
    """Walk ``order`` (descending z): stored embeddings are taken from the store when
    their turn comes (so spilled ones are loaded one at a time), others come fresh."""
    fresh = iter(fresh_iter)
    for z in order:
        emb = store.pop(z)
        yield (z, emb) if emb is not None else next(fresh)


def case_plan(case: Case, engine, opts: Options) -> policy.Plan | None:
    """The plan ``case`` runs under: ``opts.plan``, else the policy's where ``opts.guard`` asks for
    it and the engine's models folder has a float encoder to run; None: the engine as it is."""
    if opts.plan is not None or not opts.guard:
        return opts.plan
    has = getattr(engine, "has_encoder", lambda name: True)
    if not has(policy.FLOAT_ENCODER):
        return None
    return policy.plan_case(case.is_3d, case.boxes, has_int8=has(policy.W7_ENCODER), modality=modality_of(case.name))


def segment_case(case: Case, engine, opts: Options, progress=None) -> tuple[np.ndarray, Stats]:
    """The label map of ``case`` and its counters (with its cost ledger); ``progress`` (a function
    of the counters) is told as the work goes on."""
    stats = Stats(progress=progress)
    ledger = stats.ledger
    before = (dict(getattr(engine, "passes", {})), getattr(engine, "encoder_seconds", 0.0),
              getattr(engine, "decode_seconds", 0.0))
    probed = int8_guard.Probed()
    plan = case_plan(case, engine, opts)
    run = CaseRun(case, engine, opts, stats)
    if plan is not None:
        ledger.policy, ledger.reason = plan.label, plan.reason
        if plan.guard:
            with ledger.timing("probe_s"):
                stats.verdict, probed = int8_guard.choose(case, engine, run.session, plan.encoder)
            ledger.probe_slices = len(stats.verdict.probes)
            ledger.reason = f"{plan.reason}; guard: {stats.verdict.reason}"
        engine.use_encoder(stats.verdict.encoder if plan.guard else plan.encoder)
    run.known, run.decoded = probed.embeddings, probed.logits
    if not case.is_3d:
        seg = segment_2d(run)
    elif opts.mode_3d in ("propagate", "guided"):
        seg = segment_3d_propagate(run, guided=opts.mode_3d == "guided")
    else:
        seg = segment_3d_fixed(run)
    passes = getattr(engine, "passes", {})
    ledger.encoder_passes = {k: v - before[0].get(k, 0) for k, v in passes.items() if v - before[0].get(k, 0)}
    ledger.encoder_s = getattr(engine, "encoder_seconds", 0.0) - before[1]
    ledger.decode_s = getattr(engine, "decode_seconds", 0.0) - before[2]
    return seg, stats
