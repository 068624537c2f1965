"""What this CPU lets the int8 and float kernels use, read once: its flags under the oneDNN ISA cap.

Measured (``make bench-model``, docs/decisions/int8-across-cpus.md): the int8 encoder beats the
float one only with AVX-512, VNNI or AMX (on AVX2 alone it is slower); without VNNI or AMX its
kernels sum u8 x s8 pairs in 16 bits, which saturates on 8-bit weights; without native bf16
OpenVINO emulates bf16 (29 s instead of 2 s for a 125-box case).  ``ONEDNN_MAX_CPU_ISA`` takes
instructions away, and stands in for the organisers' CPUs (``AVX512_CORE``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

CLASSES = ("avx2", "avx512", "avx512_vnni", "avx512_bf16", "amx")
# cap -> (highest class it leaves, fast int8 left, 32-bit int8 sums left, native bf16 left)
_NONE = (5, True, True, True)
CAPS = {"": _NONE, "ALL": _NONE, "AVX512_CORE_AMX": _NONE, "AVX512_CORE_AMX_FP16": _NONE,
        "AVX10_1_512_AMX": _NONE, "AVX10_1_512_AMX_FP16": _NONE,
        "AVX512_CORE_FP16": (4, True, True, True), "AVX512_CORE_BF16": (4, True, True, True),
        "AVX10_1_512": (4, True, True, True), "AVX512_CORE_VNNI": (3, True, True, False),
        "AVX512_CORE": (2, True, False, False), "AVX2_VNNI": (1, True, True, False),
        "AVX2_VNNI_2": (1, True, True, False), "AVX2": (1, False, False, False),
        "AVX": (1, False, False, False), "SSE41": (1, False, False, False)}
UNKNOWN_CAP = (1, True, True, True)
FAST_INT8_FLAGS = ("avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")       # int8 dot products summed in 32 bits


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (Linux), or an empty set where they cannot be read."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    return next((set(line.split(":", 1)[1].split()) for line in text.splitlines() if line.startswith("flags")),
                set())


@dataclass(frozen=True)
class CpuFacts:
    """The CPU's flags (empty: unknown, taken as fast) and the ISA cap in force ('' for none)."""

    flags: frozenset[str] = frozenset()
    cap: str = ""

    def __post_init__(self):
        object.__setattr__(self, "flags", frozenset(self.flags))
        object.__setattr__(self, "cap", (self.cap or "").strip().upper())

    @staticmethod
    @lru_cache(maxsize=1)
    def here() -> "CpuFacts":
        return CpuFacts(frozenset(cpu_flags()), os.environ.get("ONEDNN_MAX_CPU_ISA", ""))

    @property
    def _allowed(self) -> tuple:
        return CAPS.get(self.cap, UNKNOWN_CAP)

    @property
    def cls(self) -> str:
        """'amx', 'avx512_bf16', 'avx512_vnni', 'avx512' (the organisers' kind) or 'avx2', as oneDNN runs here."""
        f = self.flags
        have = (5 if "amx_int8" in f else 4 if "avx512_bf16" in f else 3 if "avx512_vnni" in f
                else 2 if "avx512f" in f else 1) if f else 5
        return CLASSES[min(self._allowed[0], have) - 1]

    @property
    def int8_pays(self) -> bool:
        """The int8 encoder is expected to beat the float one (unknown flags count as fast)."""
        return self._allowed[1] and (not self.flags or any(f in self.flags for f in FAST_INT8_FLAGS))

    @property
    def saturates(self) -> bool:
        """int8 kernels sum in 16 bits here (no VNNI or AMX, by the flags or under the cap)."""
        return not self._allowed[2] or (bool(self.flags) and not any(f in self.flags for f in VNNI_FLAGS))

    @property
    def bf16_allowed(self) -> bool:
        """The cap leaves native bf16 instructions (OpenVINO then picks bf16 where the CPU has it)."""
        return self._allowed[3]
