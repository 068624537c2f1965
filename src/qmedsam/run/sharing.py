"""What the pools share: the order cases are handed out in, how many workers, each one's memory, loss limits."""
from __future__ import annotations

import os
from pathlib import Path

# A worker's resident memory with its models loaded and a large case decoded (peak_rss_mb of the
# 125-box and 3024x4032 public cases, about 0.7 GB, with margin): no more workers than memory holds.
WORKER_BYTES = 1 << 30
# A case lost with its worker this many times is reported failed rather than run again (it may be
# what kills its worker, e.g. out of memory); as many restarts of a lost worker are allowed.
LOSS_LIMIT = 2


def usable_cores(root: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (docker --cpus)."""
    n = len(os.sched_getaffinity(0))
    try:
        quota, period = (root / "cpu.max").read_text().split()
        if quota != "max":
            n = min(n, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return n


def worker_count(jobs: int | str, threads: int, cores: int, memory: int) -> int:
    """Workers for ``--jobs``: a number as given; 'auto' one per ``threads`` cores (1 when not
    given), no more than the memory holds."""
    if jobs != "auto":
        return int(jobs)
    return max(1, min(cores // max(1, threads), memory // WORKER_BYTES))


def memory_share(total: int, part: int, whole: int) -> int:
    """A worker's bytes of ``total``: ``part`` of ``whole`` (workers of a pool, or cores of a node)."""
    return total * part // whole


def in_order(cases: list[Path], workers: int) -> list[Path]:
    """The order cases are handed out in: as given for one worker (the organisers' order), else by
    file size, largest first (the compressed size follows the voxels a case decodes), so that no
    worker is left alone with a big case at the end."""
    if workers <= 1:
        return list(cases)
    return sorted(cases, key=lambda p: (-p.stat().st_size, p.name))
