"""The guard of ``--precision auto``: whether a 3D case planned in int8 runs in int8 or in float.

int8 departs from float on few cases, but then by many points (small boxes, a structure's end
slices, MR), and where it departs moves with the CPU.  So a few probe slices are encoded by both
encoders and their boxes decoded against both embeddings, one slice at a time; the case stays int8
unless the probed masks agree by less than :data:`MIN_DICE`, and probing stops once they agree by
:data:`SURE_DICE`.  A case kept in int8 takes its probe slices' masks from the float embeddings,
decoded by the probes anyway.  Thresholds and figures: docs/decisions/int8-guard.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from qmedsam.image.preprocess import Geometry, boxes_to_model, image_to_tensor
from qmedsam.model.spec import ENCODER_FLOAT
from qmedsam.segment.plan3d import box_xy, fixed_plan

PROBE_SLICES = 3          # probe slices per case (each: one float and one int8 encoder pass)
# Lowest int8-vs-float Dice of the probed masks (all pixels together) at which a case stays int8;
# chosen with `make bench-guard` (docs/decisions/int8-guard.md).  The lowest single box's Dice decides
# less well: small masks at a structure's end disagree by a few pixels on cases int8 segments well.
MIN_DICE = 0.93
# The probes are taken one slice at a time (the end slices of the smallest boxes first), and stop as
# soon as the probed masks so far agree at least this well: each probe slice costs a float encoder
# pass (about 0.3-0.5 s on 2 cores).  Chosen with `make bench-guard` (docs/decisions/int8-guard.md).
SURE_DICE = 0.97


@dataclass(frozen=True)
class Verdict:
    encoder: str                  # the encoder graph that runs the case
    reason: str
    agreement: float | None = None    # the probed masks' Dice, None where they were all empty
    probes: tuple[int, ...] = ()      # the slices probed


def probe_slices(boxes3d: np.ndarray, n: int = PROBE_SLICES) -> list[int]:
    """Up to ``n`` slices where int8 is most likely to depart: the end slices of the boxes, the
    smallest boxes (in xy) first, where a structure is thinnest."""
    area = (boxes3d[:, 3] - boxes3d[:, 0]) * (boxes3d[:, 4] - boxes3d[:, 1])
    picked: list[int] = []
    for i in np.argsort(area, kind="stable"):
        for z in (int(boxes3d[i, 2]), int(boxes3d[i, 5])):
            if z not in picked and len(picked) < n:
                picked.append(z)
    return picked


def probe_prompts(boxes3d: np.ndarray, geo: Geometry, zs: list[int]) -> dict[int, np.ndarray]:
    """Slice -> the (B, 1, 4) model-space prompts of the boxes on it, for slices ``zs``."""
    plan = fixed_plan(boxes3d)
    boxes256 = boxes_to_model(box_xy(boxes3d), geo)
    return {z: boxes256[np.asarray(plan[z])] for z in zs}


class PixelDice:
    """Dice of (int8, float) mask pairs over all their pixels together, as pairs come in."""

    def __init__(self) -> None:
        self.both = self.total = 0

    def add(self, pairs) -> "PixelDice":
        for a, b in pairs:
            self.both += int(np.logical_and(a, b).sum())
            self.total += int(a.sum()) + int(b.sum())
        return self

    @property
    def value(self) -> float | None:
        """None while every mask is empty."""
        return 2.0 * self.both / self.total if self.total else None


def pixel_dice(pairs) -> float | None:
    """Dice of the (int8, float) mask pairs over all their pixels together; None where all are empty."""
    return PixelDice().add(pairs).value


def settled(agreement: float | None) -> bool:
    """The probed masks so far agree well enough to stop probing (and keep int8)."""
    return agreement is not None and agreement >= SURE_DICE


def keeps_int8(agreement: float | None) -> bool:
    """All probes taken: the case stays int8 at this agreement (None: every probed mask empty)."""
    return agreement is None or agreement >= MIN_DICE


def judge(agreement: float | None, int8: str, float_encoder: str, zs: list[int]) -> Verdict:
    if keeps_int8(agreement):
        shown = "every probed mask empty" if agreement is None else f"mask Dice {agreement:.3f}"
        return Verdict(int8, f"int8: probe slices {zs} agree with float ({shown})", agreement, tuple(zs))
    return Verdict(float_encoder, f"float: probe slices {zs} disagree with int8 (mask Dice "
                                  f"{agreement:.3f} < {MIN_DICE})", agreement, tuple(zs))


@dataclass
class Probed:
    """What the probes leave for the case's own pass: the chosen encoder's embeddings of the probe
    slices and, where int8 was chosen and within :data:`KEEP_BYTES`, each probe slice's logits
    decoded from the float embedding (valid window per box, boxes in plan order): those slices are
    neither encoded nor decoded again, and their masks are the float model's."""
    embeddings: dict[int, np.ndarray] = field(default_factory=dict)
    logits: dict[int, list[np.ndarray]] = field(default_factory=dict)


KEEP_BYTES = 32 * 2**20   # probe logits kept for the case's own pass (3 slices of ~40 boxes at full size)


def choose(case, model, predictor, int8: str) -> tuple[Verdict, Probed]:
    """Which encoder runs the 3D ``case``: the int8 encoder graph ``int8`` or the float one (the verdict),
    and what the probes made with it (:class:`Probed`).  ``predictor``
    (:class:`~qmedsam.image.predictor.ImagePredictor`) decodes the probes and counts into its ledger."""
    if len(case.boxes) == 0:
        return Verdict(int8, "int8: no boxes"), Probed()
    zs = probe_slices(case.boxes)
    geo = Geometry(*case.image.shape[1:])
    prompts = probe_prompts(case.boxes, geo, zs)
    size = sum(len(b) for b in prompts.values()) * geo.resized[0] * geo.resized[1] * 4
    kept: dict | None = {} if size <= KEEP_BYTES else None
    names = (int8, ENCODER_FLOAT.name)
    embeddings: dict[str, dict[int, np.ndarray]] = {name: {} for name in names}
    dice = PixelDice()
    for k, z in enumerate(zs):        # one slice at a time: a clear agreement ends the probing
        tensor, _ = image_to_tensor(case.image[z])
        for name in names:
            embeddings[name][z], seconds = model.encode(tensor, name)
            predictor.ledger.count_pass(name, seconds)
        masks = [predictor.set_embedding(embeddings[name][z], geo).logits(prompts[z]) for name in names]
        if kept is not None:
            kept[z] = masks[1]
        dice.add((a > 0, b > 0) for a, b in zip(*masks))
        if settled(dice.value):
            zs = zs[:k + 1]
            break
    verdict = judge(dice.value, int8, ENCODER_FLOAT.name, zs)
    probed = Probed(embeddings[verdict.encoder], kept if kept and verdict.encoder == int8 else {})
    # the encoder the case will not run gives its scratch back before the case's own pass
    model.release_encoder(ENCODER_FLOAT.name if verdict.encoder == int8 else int8)
    return verdict, probed
