"""Progress of a long case on a terminal: one line, rewritten in place, then erased.

The organisers' logs are not terminals, so there the predictor keeps to one line a case; a person
watching a 100-label volume sees slices and boxes go by instead of a minute of silence.
"""
from __future__ import annotations

import sys
import time

AFTER_S = 2.0          # a case shows progress once it has run this long
EVERY_S = 0.25         # and rewrites its line at most this often


class CaseProgress:
    """Called with a case's :class:`~qmedsam.segment.Stats` as its work goes on."""

    def __init__(self, name: str, stream=None, clock=time.perf_counter):
        self.name, self.stream, self.clock = name, stream or sys.stderr, clock
        self.t0 = clock()
        self._last = None

    def __call__(self, stats) -> None:
        now = self.clock()
        if now - self.t0 < AFTER_S or (self._last is not None and now - self._last < EVERY_S):
            return
        self._last = now
        of = f" of {stats.planned}" if stats.planned else ""
        self.stream.write(f"\r{self.name}: {stats.images_done}{of} images encoded, "
                          f"{stats.boxes_decoded} boxes decoded, {now - self.t0:.0f} s\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        """Erase the line, if one was written."""
        if self._last is not None:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
