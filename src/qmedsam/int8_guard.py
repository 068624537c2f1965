"""The run-time guard of ``--precision auto``: which encoder runs a case, int8 or float.

int8 departs from float on few cases, but then by many points (small boxes, a structure's first
and last slices, MR), and where it departs moves with the CPU.  So before a 3D case runs in
int8, a few probe slices are encoded by both encoders and their boxes decoded against both
embeddings; if the probed int8 masks agree with the float ones by less than :data:`MIN_DICE`
(Dice over all their pixels together), the whole case runs with the float encoder.  The slices
are probed one at a time and the probing stops once the masks so far agree by
:data:`SURE_DICE` or more.  A 2D image is one encoder pass,
so a probe would cost more than running it in float: 2D cases run in float.

A 3D case kept in int8 (the fixed mode) takes its probe slices' masks from the float encoder's
embeddings, decoded by the probes anyway: those slices (the end slices of the smallest boxes,
where int8 departs most) get the float model's answer on every CPU, at no cost.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from qmedsam.cases import Case, box_xy
from qmedsam.image_session import EngineLike
from qmedsam.model_spec import ENCODER_FLOAT
from qmedsam.plan3d import fixed_plan
from qmedsam.preprocess import Geometry, boxes_to_model, image_to_tensor

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


def encode_probes(engine: EngineLike, encoders: tuple[str, str], volume: np.ndarray, zs) -> dict[str, dict[int, np.ndarray]]:
    """Each probe slice of ``volume`` encoded by both ``encoders`` (the int8 and the float graph):
    encoder graph -> slice -> embedding (the chosen encoder's are reused by the case's own pass,
    so a probe costs one extra pass).  The engine's own encoder is left as it was."""
    out: dict[str, dict[int, np.ndarray]] = {name: {} for name in encoders}
    for z in zs:
        tensor, _ = image_to_tensor(volume[z])
        for name in encoders:
            out[name][z] = engine.encode_with(name, tensor)
    return out


def slice_logits(embedding: np.ndarray, boxes: np.ndarray, geo: Geometry, session) -> list[np.ndarray]:
    """The valid window of each box's logits (boxes (B, 1, 4) in model space) decoded against one
    slice's ``embedding`` (``session``: embedding -> an :class:`~qmedsam.image_session.ImageSession`
    set on it)."""
    h, w = geo.resized
    return [logits[:h, :w].copy() for _, logits in session(embedding).masks(boxes)]


def probe_pairs(embeddings: dict[str, dict[int, np.ndarray]], names: tuple[str, str],
                prompts: dict[int, np.ndarray], geo: Geometry, session, keep: dict | None = None):
    """Yield (int8 mask, float mask) of every prompt of each slice of ``prompts`` (slice -> (B, 1, 4)
    model-space boxes) decoded against both encoders' ``embeddings`` (:func:`encode_probes`; ``names``:
    the int8 and the float encoder graph), in the slices' valid window; with ``keep`` (a dict) the
    float logits are kept there by slice."""
    for z, boxes in prompts.items():
        int8, float_ = (slice_logits(embeddings[name][z], boxes, geo, session) for name in names)
        if keep is not None:
            keep[z] = float_
        yield from ((a > 0, b > 0) for a, b in zip(int8, float_))


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


def choose(case: Case, engine, session, int8: str | None = None) -> tuple[Verdict, Probed]:
    """Which encoder runs ``case`` (see the module's doc): the int8 encoder graph ``int8`` (default
    ``engine.primary``) or the float one, as the verdict; the caller runs the case with it (the
    guard does not switch the engine).  Also returns what the probes made with the chosen encoder
    (:class:`Probed`)."""
    int8 = int8 or engine.primary
    probed = Probed()
    if not case.is_3d:
        verdict = Verdict(ENCODER_FLOAT.name, "float: a 2D image is one encoder pass, less than a probe costs")
    elif len(case.boxes) == 0:
        verdict = Verdict(int8, "int8: no boxes")
    else:
        zs = probe_slices(case.boxes)
        geo = Geometry(*case.image.shape[1:])
        prompts = probe_prompts(case.boxes, geo, zs)
        size = sum(len(b) for b in prompts.values()) * geo.resized[0] * geo.resized[1] * 4
        kept: dict | None = {} if size <= KEEP_BYTES else None
        embeddings: dict[str, dict[int, np.ndarray]] = {int8: {}, ENCODER_FLOAT.name: {}}
        dice = PixelDice()
        for k, z in enumerate(zs):        # one slice at a time: a clear agreement ends the probing
            for name, emb in encode_probes(engine, (int8, ENCODER_FLOAT.name), case.image, [z]).items():
                embeddings[name].update(emb)
            dice.add(probe_pairs(embeddings, (int8, ENCODER_FLOAT.name), {z: prompts[z]}, geo, session, kept))
            if settled(dice.value):
                zs = zs[:k + 1]
                break
        verdict = judge(dice.value, int8, ENCODER_FLOAT.name, zs)
        probed = Probed(embeddings[verdict.encoder], kept if kept and verdict.encoder == int8 else {})
        # the encoder the case will not run gives its scratch back before the case's own pass
        engine.release_encoder(ENCODER_FLOAT.name if verdict.encoder == int8 else int8)
    return verdict, probed
