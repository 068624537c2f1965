"""Seconds since this process was started (fork/exec of `sh predict.sh`, which execs Python)."""
from __future__ import annotations

import os


def process_age() -> float | None:
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    start_ticks = int(fields[19])          # field 22 of stat: starttime, in clock ticks since boot
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
