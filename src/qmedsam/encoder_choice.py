"""Which image encoder runs on this CPU: the int8 one where int8 arithmetic is fast, else the float one.

The int8 encoder is fast only where the CPU has int8 dot-product instructions the CPU plugin
uses well: measured (``make bench-model``), it is 2.2x faster than float with AVX-512 VNNI, 1.5x
with AVX-512 alone, and 6-18 % *slower* on an AVX2-only CPU, where its linear layers fall to a
generic int8 GEMM.  So 'auto' runs the int8 encoder where the CPU (or the oneDNN ISA cap in force)
has AVX-512, VNNI or AMX, and otherwise the float encoder (``encoder_float``: the pretrained float
weights, f16-stored, f32 at run time), which there is both faster and exact.  With the int8
encoder, the predictor's guard (:mod:`qmedsam.int8_guard`) may still run a case in float.  Where
AVX-512 comes without VNNI, OpenVINO's int8 kernels sum pairs of u8 x s8 products in 16 bits,
which saturates on 8-bit weights (OpenVINO documents it; measured here as int8 answers that move
with the CPU); the encoder with 7-bit weights (``encoder_w7``: 255 * 63 * 2 < 2^15) cannot.  So 'auto'
runs ``encoder_w7`` on every CPU where int8 pays, VNNI and AMX included: its integer sums are exact
everywhere, so a case gets the same int8 answer with and without VNNI.  Measured with the guard
(``make bench-int8``, an AMX Xeon, the 7 labelled public cases): per case it moves by at most 0.43
DSC points between this CPU with f32 leftovers and organiser-like (8-bit: 1.69), 1.04 with this
CPU's bf16 leftovers, and its mean is as close to FP32 as the 8-bit one's or closer (-0.14 / -0.04
points against -0.43 / -0.32, bf16 / f32 leftovers).  It runs on the same int8 kernels as the
8-bit one (the two were not timed side by side).  The
decoder graphs are float on every CPU.  ``--precision int8`` forces an int8 encoder wherever the
CPU is, and takes the one whose sums do not saturate there: the 8-bit one with VNNI or AMX, the
7-bit one elsewhere (AVX2 kernels sum in 16 bits too; measured on a Zen 3: MR embedding error 0.44
with 8-bit weights, 0.23 with 7-bit).
"""
from __future__ import annotations

import os
from pathlib import Path

from qmedsam.model_spec import ENCODER, ENCODER_FLOAT, ENCODER_W7

INT8_ENCODER = ENCODER.name
W7_ENCODER = ENCODER_W7.name
FLOAT_ENCODER = ENCODER_FLOAT.name
PRECISIONS = ("auto", "int8", "fp32")
# Flags under which the int8 encoder was measured faster than the float one.
FAST_INT8_FLAGS = ("avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
# oneDNN ISA caps that leave none of those usable.
SLOW_INT8_CAPS = ("SSE41", "AVX", "AVX2")
# Flags of int8 dot products that sum in 32 bits; without them (AVX-512 alone, AVX2) the kernels sum
# u8 x s8 pairs in 16 bits and saturate on 8-bit weights (what --precision int8 looks at).
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
CAPS_WITHOUT_VNNI = ("AVX512_CORE",)


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


def _saturates(flags: set[str], isa_cap: str | None) -> bool:
    """Whether the int8 kernels here sum in 16 bits: no VNNI or AMX (by the flags, or under a cap
    that takes them away).  Unknown flags: no."""
    if isa_cap and isa_cap.strip().upper() in CAPS_WITHOUT_VNNI + SLOW_INT8_CAPS:
        return True
    return bool(flags) and not any(f in flags for f in VNNI_FLAGS)


def choose_encoder(precision: str, flags: set[str] | None = None,
                   isa_cap: str | None = None) -> tuple[str, str]:
    """(encoder graph name, reason) for ``precision`` ('auto', 'int8' or 'fp32'); 'fp32' runs the
    float model folder's own encoder."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} not in {PRECISIONS}")
    if precision == "fp32":
        return INT8_ENCODER, "--precision fp32"
    flags = cpu_flags() if flags is None else flags
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") if isa_cap is None else isa_cap
    if precision == "int8":
        if _saturates(flags, cap):
            return W7_ENCODER, ("--precision int8, 7-bit weights: this CPU's int8 sums are 16-bit (no VNNI or AMX) "
                                "and saturate on 8-bit weights")
        return INT8_ENCODER, "--precision int8"
    if int8_pays(flags, cap):
        return W7_ENCODER, ("int8, 7-bit weights: this CPU has fast int8 arithmetic (AVX-512, VNNI or AMX), and "
                            "7-bit weights give the same int8 sums with or without VNNI (8-bit ones saturate "
                            "without it)")
    return FLOAT_ENCODER, "float: this CPU has no AVX-512, VNNI or AMX, where the int8 encoder is slower"
