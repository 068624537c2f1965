"""The precision policy of ``--precision auto``: which encoder a case runs, decided before any model loads.

What is known up front is enough to price a case: whether it is 2D or 3D, how many encoder passes
it plans (its slices, or its image and zoom canvases), and this CPU's class.  For each class the
shipped table ``cpu_rates.json`` (``make bench-rates``) holds the seconds of a float and of an
int8 encoder pass, of loading each encoder from the compile cache, and of the decoder's work on a
probe slice (its per-image step and each box).
A case then takes the cheaper of (the guard only where it is expected to save :data:`MIN_GAIN`)

* **float**: the float encoder on every pass (exact; nothing else to load), and
* **int8 + guard** (:mod:`qmedsam.int8_guard`): both encoders load, one to three probe slices are
  encoded by both and compared, and the rest runs in int8 unless the probes disagree.

int8 without the guard is never the default: it loses points on some MR lesions.  A 2D image runs
in float: its one or few passes cannot pay for a probe, and unguarded int8 departs on 2D MR.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from qmedsam import encoder_choice
from qmedsam.encoder_choice import FLOAT_ENCODER, INT8_ENCODER, W7_ENCODER, choose_encoder, int8_pays

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


def cpu_class(flags: set[str] | None = None, isa_cap: str | None = None) -> str:
    """'amx', 'avx512_bf16' (VNNI and native bf16), 'avx512_vnni', 'avx512' (the organisers' kind)
    or 'avx2', as oneDNN will run on this CPU under the ISA cap (``ONEDNN_MAX_CPU_ISA``) in force."""
    flags = encoder_choice.cpu_flags() if flags is None else flags
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA", "") if isa_cap is None else isa_cap).strip().upper()
    allowed = {"": 5, "ALL": 5, "AVX512_CORE_AMX": 5, "AVX512_CORE_AMX_FP16": 5, "AVX10_1_512_AMX": 5,
               "AVX10_1_512_AMX_FP16": 5, "AVX512_CORE_FP16": 4, "AVX512_CORE_BF16": 4, "AVX10_1_512": 4,
               "AVX512_CORE_VNNI": 3, "AVX512_CORE": 2}.get(cap, 1)
    have = (5 if "amx_int8" in flags else 4 if "avx512_bf16" in flags else 3 if "avx512_vnni" in flags
            else 2 if "avx512f" in flags else 1) if flags else 5
    return ("avx2", "avx512", "avx512_vnni", "avx512_bf16", "amx")[min(allowed, have) - 1]


def load_rates(path: Path = RATES_FILE) -> dict:
    """CPU class -> measured seconds (see the module's doc); empty where the table is missing."""
    try:
        return json.loads(path.read_text())["classes"]
    except (OSError, ValueError, KeyError):
        return {}


@dataclass(frozen=True)
class Plan:
    """What a case runs: ``encoder`` first, and whether the guard probes it (``guard``: the case
    may end in float)."""
    encoder: str
    guard: bool
    reason: str

    @property
    def label(self) -> str:
        return "int8+guard" if self.guard else ("float" if self.encoder == FLOAT_ENCODER else "int8")


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
           flags: set[str] | None = None, isa_cap: str | None = None, has_int8: bool = True,
           modality: str = "") -> Plan:
    """The plan of one case under ``--precision auto``: ``passes`` encoder passes planned, about
    ``boxes_per_slice`` boxes decoded on a slice, of ``modality`` (the case name's second field)."""
    flags = encoder_choice.cpu_flags() if flags is None else flags
    cls = cpu_class(flags, isa_cap)
    if not has_int8 or not int8_pays(flags, isa_cap if isa_cap is not None else os.environ.get("ONEDNN_MAX_CPU_ISA")):
        return Plan(FLOAT_ENCODER, False, f"float: int8 does not pay on this CPU ({cls})")
    if not is_3d:
        return Plan(FLOAT_ENCODER, False, "float: a 2D image's few encoder passes cannot pay for a guard probe")
    rate = (load_rates() if rates is None else rates).get(cls)
    if rate is None:
        return Plan(W7_ENCODER, True, f"int8+guard: no measured rates for CPU class {cls}")
    cost = expected_seconds(passes, boxes_per_slice, rate, FALLBACK_SHARE.get(modality, FALLBACK_OTHERS))
    best = "int8+guard" if cost["int8+guard"] < (1 - MIN_GAIN) * cost["float"] else "float"
    shown = ", ".join(f"{k} {v:.2f} s" for k, v in cost.items())
    plan_of = {"float": (FLOAT_ENCODER, False), "int8+guard": (W7_ENCODER, True)}
    return Plan(*plan_of[best], f"{best}: {passes} encoder passes{' of ' + modality if modality else ''} on a {cls} "
                                f"CPU, expected {shown}")


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


def plan_case(is_3d: bool, boxes, rates: dict | None = None, flags=None, isa_cap=None, has_int8: bool = True,
              modality: str = "") -> Plan:
    """:func:`decide` for a case from its raw boxes (a case's boxes, or :func:`qmedsam.cases.peek_boxes`)."""
    passes, per_slice = slice_load(boxes) if is_3d and boxes is not None else (1, 1.0)
    return decide(is_3d, max(passes, 1), per_slice, rates, flags, isa_cap, has_int8, modality)


def engine_encoders(models: Path, precision: str, first_is_3d: bool = False, first_boxes=None,
                    modality: str = "") -> tuple[str, str | None, str]:
    """(encoder graph to load up front, another to load beside it or None, why) for a models folder
    and ``--precision``: under 'auto' the plan of the first case (a 2D image unless told), so that
    only the graphs it runs load; later cases load more on first use."""
    from qmedsam.model_dir import has_graph

    if precision == "auto" and has_graph(models, FLOAT_ENCODER):
        first = plan_case(first_is_3d, first_boxes, has_int8=has_graph(models, W7_ENCODER), modality=modality)
        return first.encoder, FLOAT_ENCODER if first.guard else None, f"{first.encoder} for the first case ({first.reason})"
    encoder, why = choose_encoder(precision)
    if not has_graph(models, encoder):              # a models folder exported before that encoder
        encoder, why = INT8_ENCODER, f"int8: {models} has no {encoder}.xml"
    return encoder, None, why
