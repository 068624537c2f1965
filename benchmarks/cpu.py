"""What CPU a figure comes from, and how to run a measurement as on another kind of CPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from qmedsam.precision.cpu import cpu_flags

FLAGS = ("avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
# The organisers' published timing machine is a Xeon W-2133 (Skylake: AVX-512 without VNNI,
# no bf16, no AMX).  OpenVINO's CPU plugin honours oneDNN's ISA cap, so this stands in for it
# on a newer Xeon; float leftovers are then forced to f32 as well.
ORGANISER_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}
SETTINGS = {"default": {}, "organiser-like": ORGANISER_ENV}
# What the cap takes away; a CPU with none of these already runs as the organisers' kind does.
ABOVE_ORGANISERS = ("avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def settings(flags: set[str] | None = None) -> dict[str, dict[str, str]]:
    """The settings worth measuring here: 'organiser-like' only where the cap changes something
    (on a CPU without VNNI, bf16 and AMX it is the default setting again, float leftovers
    already f32)."""
    flags = cpu_flags() if flags is None else flags
    return dict(SETTINGS) if any(f in flags for f in ABOVE_ORGANISERS) else {"default": {}}


def settings_note(chosen: dict) -> str | None:
    """A line saying why the organiser-like setting is not measured, or None."""
    if "organiser-like" in chosen:
        return None
    return ("organiser-like setting not measured: this CPU has no VNNI, bf16 or AMX, so capping it at "
            "AVX512_CORE changes nothing (it runs as the organisers' kind of CPU or below, float leftovers f32)")


def describe() -> str:
    """'<model name>, N cores; flags: ...' of this machine (Linux /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
                 "unknown CPU")
    flags = cpu_flags()
    have = [f for f in FLAGS if f in flags]
    missing = [f for f in FLAGS if f not in flags]
    return (f"{model}, {os.cpu_count()} logical CPUs; has {' '.join(have) or 'none of them'}; "
            f"lacks {' '.join(missing) or 'none'}")


def run_setting(module: str, setting: str, args: list[str], progress: bool = False) -> dict:
    """Run ``python -m module --measure SETTING args`` in a fresh process with the setting's
    environment (the ISA cap must be in place before OpenVINO loads); returns its JSON result.
    With ``progress`` its stderr (per-case lines of a long measurement) goes straight through."""
    env = dict(os.environ, **SETTINGS[setting])
    proc = subprocess.run([sys.executable, "-m", module, "--measure", setting, *args], env=env,
                          stdout=subprocess.PIPE, stderr=None if progress else subprocess.PIPE,
                          encoding="utf-8", errors="replace")
    if proc.returncode != 0:
        said = f":\n{proc.stderr[-2000:]}" if proc.stderr else f" (exit status {proc.returncode}; its stderr is above)"
        raise RuntimeError(f"{module} --measure {setting} failed{said}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
