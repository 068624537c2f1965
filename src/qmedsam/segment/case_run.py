"""One case segmented: its plan's encoder (after the guard, where the plan asks for it), then its mode."""
from __future__ import annotations

import numpy as np

from qmedsam.image.predictor import ImagePredictor
from qmedsam.image.preprocess import canvas_to_tensor, image_to_tensor
from qmedsam.precision import guard
from qmedsam.segment.interpolation import between, gap_slices
from qmedsam.segment.ledger import Ledger
from qmedsam.segment.options import SegmentOptions


class CaseRun:
    """What every image of one case is encoded and decoded with: the model, the encoder graph, the
    options, one :class:`ImagePredictor` re-set per image, and what the guard's probes left:
    embeddings of slices already encoded (``known``) and masks already decoded (``decoded``),
    each taken out as it is used."""

    def __init__(self, case, model, opts: SegmentOptions, encoder: str, predictor: ImagePredictor,
                 probed: guard.Probed, cache=None):
        self.case, self.model, self.opts, self.encoder, self.predictor = case, model, opts, encoder, predictor
        self.ledger = predictor.ledger
        self.known, self.decoded = probed.embeddings, probed.logits
        self.cache = cache       # an EmbeddingCache shared with later processes of the case, or None

    def _embeddings(self, keys: list, tensor_of, overlap: bool | None, known: dict, note):
        """Yield (key, embedding) for ``keys`` in order, those in ``known`` taken from it; with
        overlap (the option, by default) the next input is encoded while the caller decodes this one."""
        overlap = self.opts.overlap if overlap is None else overlap
        model, encoder, ledger = self.model, self.encoder, self.ledger
        fresh = [k for k in keys if k not in known]
        pending, started = None, 0
        try:
            for key in keys:
                if key in known:
                    emb = known.pop(key)
                else:
                    if pending is None:
                        pending, started = model.start_encode(tensor_of(fresh[started]), encoder), started + 1
                    emb = model.finish_encode(pending)
                    ledger.count_pass(encoder, pending.seconds)
                    pending = None
                    if overlap and started < len(fresh):
                        pending, started = model.start_encode(tensor_of(fresh[started]), encoder), started + 1
                note(key)
                yield key, emb
        finally:                 # closed early (the case failed): the model's request is free again
            if pending is not None:
                model.finish_encode(pending)
                ledger.count_pass(encoder, pending.seconds)

    def slices(self, zs, overlap: bool | None = None):
        """Yield (z, embedding) for slices ``zs`` of the volume in order; ``known`` ones are not encoded."""
        volume, zs = self.case.image, list(zs)
        if self.cache is None:
            return self._embeddings(zs, lambda z: image_to_tensor(volume[z])[0], overlap, self.known,
                                    self.ledger.note_encoded)
        return self._cached_slices(zs, overlap)

    def _cached_slices(self, zs, overlap):
        volume, known, cache, ledger = self.case.image, self.known, self.cache, self.ledger
        stored = set()
        for z in zs:
            if z not in known:
                emb = cache.get(volume[z])
                if emb is not None:
                    known[z] = emb
                    stored.add(z)
                    ledger.cached += 1
        fresh = {z for z in zs if z not in known}

        def note(z):                      # a slice from the cache was not encoded by this process
            if z not in stored:
                ledger.note_encoded(z)

        for z, emb in self._embeddings(zs, lambda z: image_to_tensor(volume[z])[0], overlap, known, note):
            if z in fresh:
                cache.put(volume[z], emb)
            yield z, emb

    def canvases(self, canvases: list):
        """Yield (k, embedding) for the 2D zoom canvases (qmedsam.image.zoom), encoded ahead."""
        def note(_):
            self.ledger.crops_encoded += 1
            self.ledger.note_embedding()
            self.ledger.tick()

        return self._embeddings(list(range(len(canvases))), lambda k: canvas_to_tensor(self.case.image, canvases[k]),
                                None, {}, note)

    def interpolating_slices(self, zs):
        """Yield (z, embedding) for every slice of ``zs``, the slices of
        :func:`~qmedsam.segment.interpolation.gap_slices` after their upper neighbour: their
        neighbours' mean where those agree within ``opts.interpolate``, else encoded (or known)."""
        gaps = gap_slices(zs)
        left = None
        for z, emb in self.slices([z for z in zs if z not in gaps]):
            yield z, emb
            if z - 1 in gaps:
                mean = None if z - 1 in self.known else between(left, emb, self.opts.interpolate)
                if mean is not None:
                    self.ledger.interpolated.append(z - 1)
                    self.ledger.tick()
                    yield z - 1, mean
                else:
                    yield from self.slices([z - 1], overlap=False)
            left = emb


def segment_case(case, model, plan, opts: SegmentOptions = SegmentOptions(), block: int | None = None,
                 progress=None, cache=None) -> tuple[np.ndarray, Ledger]:
    """The label map of a checked ``case`` (box i -> label i) run under ``plan``
    (:class:`qmedsam.precision.policy.Plan`), and its ledger; ``block``: boxes per decoder call
    (None: ``opts.block_size``); ``progress`` (a function of the ledger) is told as the work goes on;
    ``cache``: an :class:`~qmedsam.segment.embedding_cache.EmbeddingCache` for slices (interactive rounds)."""
    from qmedsam.segment.fixed3d import segment_fixed
    from qmedsam.segment.image2d import segment_2d
    from qmedsam.segment.propagate3d import segment_propagate

    ledger = Ledger(policy=plan.label, reason=plan.reason, progress=progress)
    if block is None:
        block = opts.block_size(case.image.shape[1:3] if case.is_3d else case.image.shape[:2])
    predictor = ImagePredictor(model, block, ledger)
    encoder, probed = plan.encoder, guard.Probed()
    if plan.guard and case.is_3d:        # the policy never guards a 2D image: its one pass is less than a probe
        with ledger.timing("probe_s"):
            ledger.verdict, probed = guard.choose(case, model, predictor, plan.encoder)
        ledger.probe_slices = len(ledger.verdict.probes)
        ledger.reason = f"{plan.reason}; guard: {ledger.verdict.reason}"
        encoder = ledger.verdict.encoder
    ledger.encoder = encoder
    run = CaseRun(case, model, opts, encoder, predictor, probed, cache)
    if not case.is_3d:
        return segment_2d(run), ledger
    if case.kind != "box":
        from qmedsam.segment.successors import segment_interactive, segment_recist

        return (segment_recist if case.kind == "recist" else segment_interactive)(run), ledger
    if opts.mode_3d in ("propagate", "guided"):
        return segment_propagate(run, guided=opts.mode_3d == "guided"), ledger
    return segment_fixed(run), ledger
