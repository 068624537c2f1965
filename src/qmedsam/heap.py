"""One malloc arena for the predictor process (glibc's ``mallopt(M_ARENA_MAX, 1)``).

glibc gives each thread that allocates concurrently an arena of its own, and memory freed in
one arena is not reused by the others.  The predictor allocates from several threads (the
model-loading thread, OpenVINO's inference threads, the main thread), so the per-box decoder's
scratch landed on fresh pages while the per-image step's freed scratch sat in another arena.
It lowers peak RSS at no measured cost in time (figures in
docs/predictor.md); returning freed memory at once as well (``M_TRIM_THRESHOLD`` 0) saved nothing
more and cost time, so it is not set.

Call :func:`single_arena` before the first worker thread starts.  On a C library without
``mallopt`` (not glibc) it does nothing and says so by returning False.
"""
from __future__ import annotations

import ctypes

M_ARENA_MAX = -8            # glibc's malloc.h


def single_arena() -> bool:
    """Limit this process to one malloc arena; True where the C library took the setting."""
    try:
        libc = ctypes.CDLL(None)                 # the C library the interpreter runs on
        return bool(libc.mallopt(M_ARENA_MAX, 1))
    except (OSError, AttributeError):
        return False
