"""The tiled 3D nuclei volume (the speed case of many small labels over many slices)."""
import numpy as np

from tools.public_data import nuclei_3d, tiled_nuclei_3d


def test_tiled_nuclei_3d_is_flipped_copies_labelled_apart():
    src = nuclei_3d()
    t = tiled_nuclei_3d(z_copies=2, x_copies=2, seed=1)
    z, y, x = src.image.shape
    n = len(np.unique(src.labels)) - 1
    assert t.image.shape == t.labels.shape == (2 * z, y, 2 * x)
    assert len(np.unique(t.labels)) - 1 == 4 * n and t.labels.max() == 4 * n
    flips = [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]
    for zi in range(2):
        for xi in range(2):
            block = (slice(zi * z, (zi + 1) * z), slice(None), slice(xi * x, (xi + 1) * x))
            img, lab = t.image[block], t.labels[block]
            # each block is the source volume under one of the eight flips, labels moved with it
            match = [f for f in flips if np.array_equal(np.flip(src.image, f), img)]
            assert match, "a block is not a flipped copy of the source volume"
            assert np.array_equal(np.flip(src.labels, match[0]) > 0, lab > 0)
            # its labels are its own: the block's range, and nowhere else in the volume
            first = (zi * 2 + xi) * n
            assert lab[lab > 0].min() == first + 1 and lab.max() == first + n
            outside = t.labels.copy()
            outside[block] = 0
            assert not np.isin(outside, np.arange(first + 1, first + n + 1)).any()
