"""How ``--precision auto`` runs a case, priced before any model loads: the float encoder, or int8 + guard.

What is known up front is enough: 2D or 3D, the encoder passes it plans, and this CPU's class.
``cpu_rates.json`` (``make bench-rates``) holds per class the seconds of a float and an int8
encoder pass, of loading each encoder from the compile cache, and of the decoder's work on a
probe slice.  A case takes int8 + guard (:mod:`qmedsam.precision.guard`) only where it is
expected to save :data:`MIN_GAIN` of the float path; a 2D image always runs float.  Why, with
figures: docs/decisions/precision-policy.md.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from qmedsam.model.spec import ENCODER_FLOAT, ENCODER_W7
from qmedsam.precision.cpu import CpuFacts

FLOAT_ENCODER, W7_ENCODER = ENCODER_FLOAT.name, ENCODER_W7.name
RATES_FILE = Path(__file__).with_name("cpu_rates.json")
# Probe slices a guarded case takes on average: 1 to 3, about 2 over make bench-guard's volumes.
EXPECTED_PROBES = 2.0
# Share of guarded cases whose probes disagree, which then pay the probes and run in float: MR
# departs most (the guarded MR cases of make bench-mix and of issue 38's held-out set fell back).
FALLBACK_SHARE = {"MR": 0.5}
FALLBACK_OTHERS = 0.1
# The guard must be expected to save this share of the float path's time: the prices are medians
# of a drifting VM, and a case the guard slows down costs more than a marginal gain buys (on the
# organisers' kind of CPU the gain per pass is under a tenth, make bench-rates).
MIN_GAIN = 0.10


def load_rates(path: Path = RATES_FILE) -> dict:
    """CPU class -> measured seconds (see the module's doc); empty where the table is missing."""
    try:
        return json.loads(path.read_text())["classes"]
    except (OSError, ValueError, KeyError):
        return {}


@dataclass(frozen=True)
class Plan:
    """What a case runs: ``encoder`` first, and whether the guard probes it (``guard``: the case
    may end in float); ``label`` names the plan in efficiency.csv's policy column."""
    encoder: str
    guard: bool
    reason: str
    label: str = ""


def expected_seconds(passes: int, boxes_per_probe: float, rate: dict, fallback: float = FALLBACK_OTHERS) -> dict:
    """Expected seconds of a 3D case's model work that the two candidates do not share, where a
    share ``fallback`` of guarded cases end in float."""
    f, q = rate["float_pass"], rate["int8_pass"]
    k = min(EXPECTED_PROBES, passes)
    probe = f + q + 2 * (rate.get("prepare_image", 0.0) + boxes_per_probe * rate["decode_box"])
    rest = (passes - k) * (q + fallback * (f - q))
    return {"float": rate["float_load"] + passes * f,
            "int8+guard": rate["float_load"] + rate["int8_load"] + k * probe + rest}


def decide(is_3d: bool, passes: int, boxes_per_slice: float, rates: dict | None = None,
           cpu: CpuFacts | None = None, has_int8: bool = True, modality: str = "") -> Plan:
    """The plan of one case under ``--precision auto``: ``passes`` encoder passes planned, about
    ``boxes_per_slice`` boxes decoded on a slice, of ``modality`` (the case name's second field)."""
    cpu = cpu or CpuFacts.here()
    cls = cpu.cls
    if not has_int8 or not cpu.int8_pays:
        return Plan(FLOAT_ENCODER, False, f"float: int8 does not pay on this CPU ({cls})", "float")
    if not is_3d:
        return Plan(FLOAT_ENCODER, False, "float: a 2D image's few encoder passes cannot pay for a guard probe",
                    "float")
    rate = (load_rates() if rates is None else rates).get(cls)
    if rate is None:
        return Plan(W7_ENCODER, True, f"int8+guard: no measured rates for CPU class {cls}", "int8+guard")
    cost = expected_seconds(passes, boxes_per_slice, rate, FALLBACK_SHARE.get(modality, FALLBACK_OTHERS))
    best = "int8+guard" if cost["int8+guard"] < (1 - MIN_GAIN) * cost["float"] else "float"
    shown = ", ".join(f"{k} {v:.2f} s" for k, v in cost.items())
    plan_of = {"float": (FLOAT_ENCODER, False), "int8+guard": (W7_ENCODER, True)}
    return Plan(*plan_of[best], f"{best}: {passes} encoder passes{' of ' + modality if modality else ''} on a {cls} "
                                f"CPU, expected {shown}", best)


def slice_load(boxes3d) -> tuple[int, float]:
    """(slices a 3D case's boxes touch, mean boxes per touched slice): its planned encoder passes
    and decoding per probe; (0, 0.0) for boxes that are not (N, 6)."""
    import numpy as np

    b = np.asarray(boxes3d)
    if b.ndim != 2 or b.shape[1] != 6 or len(b) == 0 or not np.isfinite(b).all():
        return 0, 0.0
    z0, z1 = np.round(b[:, 2]).astype(np.int64), np.round(b[:, 5]).astype(np.int64)
    spans = np.maximum(z1 - z0 + 1, 0)
    lo, hi = int(z0.min()), int(z1.max())
    if hi < lo or hi - lo > 100_000:
        return 0, 0.0
    touched = np.zeros(hi - lo + 1, bool)
    for a, c in zip(z0, z1):
        touched[a - lo:c - lo + 1] = True
    n = int(touched.sum())
    return n, float(spans.sum()) / n if n else 0.0


def plan_case(is_3d: bool, boxes, rates: dict | None = None, cpu: CpuFacts | None = None, has_int8: bool = True,
              modality: str = "") -> Plan:
    """:func:`decide` for a case from its raw boxes (a case's boxes, or :func:`qmedsam.cases.read.peek_boxes`)."""
    passes, per_slice = slice_load(boxes) if is_3d and boxes is not None else (1, 1.0)
    return decide(is_3d, max(passes, 1), per_slice, rates, cpu, has_int8, modality)
