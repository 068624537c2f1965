"""One malloc arena for the predictor process (glibc's ``mallopt(M_ARENA_MAX, 1)``).

The predictor allocates from several threads; with an arena each, memory freed in one was not
reused by the others, so peak RSS grew (figures: docs/predictor.md).  Call :func:`single_arena`
before the first worker thread starts; without glibc it does nothing and returns False.
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
