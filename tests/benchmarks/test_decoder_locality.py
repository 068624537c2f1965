"""The decoder-locality benchmark's window: where it sits, and that a window of the whole grid is
the whole-grid decoder (so a lower Dice at smaller windows is the decoder's, not the cropping's)."""
from pathlib import Path

import numpy as np

from benchmarks.bench_decoder_locality import GRID, compare, small_prompts, window_origin

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "inputs"


def test_window_is_centred_on_the_box_and_kept_inside_the_grid():
    assert window_origin(np.array([100, 60, 140, 100]), 16) == (12, 22)      # centre (30, 20) cells
    assert window_origin(np.array([0, 0, 8, 8]), 32) == (0, 0)
    assert window_origin(np.array([250, 250, 255, 255]), 32) == (GRID - 32, GRID - 32)


def test_a_window_of_the_whole_grid_gives_the_whole_grid_masks(float_model):
    name, x, boxes = next(p for p in small_prompts(SAMPLES) if p[0].startswith("2D"))
    res = compare(float_model, x, boxes[:2], sizes=(GRID, 24))
    assert all(d == 1.0 and diff < 1e-3 for d, diff in res[GRID])
    assert len(res[24]) == len(boxes[:2]) and all(0.0 <= d <= 1.0 for d, _ in res[24])
