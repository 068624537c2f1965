"""How a case is segmented: the one set of defaults the command line, the API and the benchmarks read."""
from __future__ import annotations

from dataclasses import dataclass

from qmedsam.image.zoom import MAX_CROPS
from qmedsam.segment.interpolation import DEFAULT_TAU
from qmedsam.system.memory import auto_block_size, current_rss_bytes, memory_limit

MODES_3D = ("fixed", "propagate", "guided")


@dataclass(frozen=True)
class SegmentOptions:
    # fixed: each box's xy extent on every slice of its z range (the paper); propagate: the
    # baseline's propagation from the middle slice; guided: propagation clipped to the box
    mode_3d: str = "fixed"
    zoom_crops: int = MAX_CROPS        # 2D: at most this many crops for small boxes (0: no zoom)
    # fixed mode: a slice between two encoded ones takes their mean embedding when they differ by
    # less than this (qmedsam.segment.interpolation; 0: every slice encoded)
    interpolate: float = DEFAULT_TAU
    max_boxes: int | str = "auto"      # boxes per decoder call; 'auto': from the memory limit
    overlap: bool = True               # encode the next slice while decoding the current one
    store_budget: int = 512 * 2**20    # propagation: embeddings kept in RAM between sweeps

    def block_size(self, shape: tuple[int, int], memory: int | None = None) -> int:
        """Boxes per decoder call for an image of (H, W); ``memory``: bytes this worker may use
        (None: the process's limit)."""
        if self.max_boxes != "auto":
            return int(self.max_boxes)
        return auto_block_size(*shape, memory or memory_limit(), current_rss_bytes())
