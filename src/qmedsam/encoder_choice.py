"""Which image encoder runs on this CPU: the int8 one where int8 arithmetic is fast, else the float one.

The int8 encoder is fast only where the CPU has int8 dot-product instructions the CPU plugin
uses well.  Measured (``make bench-model``, encoder ms per slice, one run each):

* AVX-512 with VNNI (AMD EPYC, 2 cores): int8 2.2x faster than float;
* AVX-512 without VNNI (the same CPU capped with ``ONEDNN_MAX_CPU_ISA=AVX512_CORE``, like the
  organisers' Skylake Xeon): int8 1.5x faster;
* AVX2 only (AMD EPYC, 2 cores, no AVX-512, no VNNI): int8 6-18 % *slower* than float over four
  interleaved runs (0.72-0.94 vs 0.68-0.80 s): its linear layers run in a generic int8 GEMM
  (521 ms against 366 ms in f32), and its results lie further from Brevitas' (relative
  embedding error 0.28 against 0.08 on AVX-512 CPUs).

So 'auto' runs the int8 encoder where the CPU (or the oneDNN ISA cap in force) has AVX-512,
VNNI or AMX, and otherwise the float encoder (``encoder_float``: the pretrained float weights,
stored as f16, run in f32), which on those CPUs is both faster and exact.  The decoder graphs
are float on every CPU.
"""
from __future__ import annotations

import os
from pathlib import Path

from qmedsam.model_spec import ENCODER, ENCODER_FLOAT

INT8_ENCODER = ENCODER.name
FLOAT_ENCODER = ENCODER_FLOAT.name
PRECISIONS = ("auto", "int8", "fp32")
# Flags under which the int8 encoder was measured faster than the float one.
FAST_INT8_FLAGS = ("avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
# oneDNN ISA caps that leave none of those usable.
SLOW_INT8_CAPS = ("SSE41", "AVX", "AVX2")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (Linux), or an empty set where they cannot be read."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    return next((set(line.split(":", 1)[1].split()) for line in text.splitlines() if line.startswith("flags")),
                set())


def int8_pays(flags: set[str], isa_cap: str | None = None) -> bool:
    """True where the int8 encoder is expected to beat the float one: the CPU has AVX-512, VNNI
    or AMX and the oneDNN ISA cap (``ONEDNN_MAX_CPU_ISA``), if any, does not take them away.
    Unknown flags (no /proc/cpuinfo) count as fast: the shipped default stays int8."""
    if isa_cap and isa_cap.strip().upper() in SLOW_INT8_CAPS:
        return False
    if not flags:
        return True
    return any(f in flags for f in FAST_INT8_FLAGS)


def choose_encoder(precision: str, flags: set[str] | None = None,
                   isa_cap: str | None = None) -> tuple[str, str]:
    """(encoder graph name, reason) for ``precision`` ('auto', 'int8' or 'fp32'); 'fp32' runs the
    float model folder's own encoder."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} not in {PRECISIONS}")
    if precision != "auto":
        return INT8_ENCODER, f"--precision {precision}"
    flags = cpu_flags() if flags is None else flags
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") if isa_cap is None else isa_cap
    if int8_pays(flags, cap):
        return INT8_ENCODER, "int8: this CPU has fast int8 arithmetic (AVX-512, VNNI or AMX)"
    return FLOAT_ENCODER, "float: this CPU has no AVX-512, VNNI or AMX, where the int8 encoder is slower"
