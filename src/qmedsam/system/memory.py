"""Memory limits (cgroup v2/v1 or physical) and the decoder box-block size they allow."""
from __future__ import annotations

import os
import resource
from pathlib import Path

# The factored decoder's working set per box of a block, its logits included: peak RSS grows
# 12.8 MB a box from blocks of 1 to 16 on an AVX-512 CPU and 31 MB on an AVX2-only one (`make
# bench-predict`, 241-box case; the kernels' scratch differs); the larger, with margin.
DECODER_BYTES_PER_BOX = 32 * 2**20
# Blocks of 8 run the 125-box sample as fast as blocks of 16 (1.52 vs 1.51 s) with 130 MB less.
MAX_BLOCK = 8


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def memory_limit(root: Path = Path("/sys/fs/cgroup")) -> int:
    """Bytes this process may use: the cgroup limit if set, else physical memory."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    candidates = [_read_int(root / "memory.max"),                       # cgroup v2
                  _read_int(root / "memory" / "memory.limit_in_bytes")]  # cgroup v1
    limits = [c for c in candidates if c and c < physical]
    return min(limits) if limits else physical


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    try:
        fields = Path("/proc/self/statm").read_text().split()
        return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss_bytes()


def auto_block_size(height: int, width: int, limit: int, resident: int) -> int:
    """Boxes per decoder call so that the decoder stays within a quarter of free memory.

    ``limit`` is what the process may use (:func:`memory_limit`), ``resident`` what it
    holds already (:func:`current_rss_bytes`); the full-resolution label map and image
    (4 bytes a pixel) come on top.  The per-box cost is the decoder's working set, not the
    image size, since masks are pasted block by block over their positive windows only.
    """
    budget = max(limit - resident - 4 * height * width, 0) // 4
    return int(max(1, min(MAX_BLOCK, budget // DECODER_BYTES_PER_BOX)))
