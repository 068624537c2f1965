"""What CPU a figure comes from, and how to run a measurement as on another kind of CPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

FLAGS = ("avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
# The organisers' published timing machine is a Xeon W-2133 (Skylake: AVX-512 without VNNI,
# no bf16, no AMX).  OpenVINO's CPU plugin honours oneDNN's ISA cap, so this stands in for it
# on a newer Xeon; float leftovers are then forced to f32 as well.
ORGANISER_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}
SETTINGS = {"default": {}, "organiser-like": ORGANISER_ENV}


def describe() -> str:
    """'<model name>, N cores; flags: ...' of this machine (Linux /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
                 "unknown CPU")
    flags = next((set(line.split(":", 1)[1].split()) for line in text.splitlines() if line.startswith("flags")), set())
    have = [f for f in FLAGS if f in flags]
    missing = [f for f in FLAGS if f not in flags]
    return (f"{model}, {os.cpu_count()} logical CPUs; has {' '.join(have) or 'none of them'}; "
            f"lacks {' '.join(missing) or 'none'}")


def run_setting(module: str, setting: str, args: list[str]) -> dict:
    """Run ``python -m module --measure SETTING args`` in a fresh process with the setting's
    environment (the ISA cap must be in place before OpenVINO loads); returns its JSON result."""
    env = dict(os.environ, **SETTINGS[setting])
    proc = subprocess.run([sys.executable, "-m", module, "--measure", setting, *args], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{module} --measure {setting} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
