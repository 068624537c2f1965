import numpy as np
import pytest

from qmedsam.cases.atomic import save_segs
from qmedsam.system.memory import DECODER_BYTES_PER_BOX, MAX_BLOCK, auto_block_size, memory_limit


def test_cgroup_limits(tmp_path):
    (tmp_path / "memory.max").write_text("1073741824\n")
    assert memory_limit(tmp_path) == 1 << 30
    (tmp_path / "memory.max").write_text("max\n")
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text(str(2 << 30))
    assert memory_limit(tmp_path) == 2 << 30
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text(str(1 << 62))  # "unlimited"
    assert memory_limit(tmp_path) < 1 << 62


def test_auto_block_is_a_quarter_of_free_memory_in_decoder_working_sets():
    mib, per_box = 1 << 20, DECODER_BYTES_PER_BOX
    image = 4 * 512 * 512                                   # label map + image, 4 bytes a pixel
    # 512 MiB limit, 200 MiB resident: a quarter of what is left, in whole working sets
    expected = (512 * mib - 200 * mib - image) // 4 // per_box
    assert 1 < expected < MAX_BLOCK
    assert auto_block_size(512, 512, 512 * mib, 200 * mib) == expected
    # more memory, more boxes, capped at MAX_BLOCK
    assert auto_block_size(512, 512, 64 << 30, 200 * mib) == MAX_BLOCK
    # what is resident and the image size count against the budget
    assert auto_block_size(512, 512, 512 * mib, 400 * mib) < expected
    assert auto_block_size(8192, 8192, 512 * mib, 200 * mib) < expected
    # nothing free: still one box at a time, never zero
    assert auto_block_size(512, 512, 512 * mib, 600 * mib) == 1


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    def boom(f, **kw):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", boom)
    with pytest.raises(KeyboardInterrupt):
        save_segs(tmp_path / "2DBox_X_1.npz", np.zeros((3, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_write_is_readable(tmp_path):
    save_segs(tmp_path / "a.npz", np.ones((3, 3), np.uint16))
    assert np.load(tmp_path / "a.npz")["segs"].dtype == np.uint16
    assert (tmp_path / "a.npz").stat().st_mode & 0o044
