import numpy as np
import pytest

from qmedsam.atomic import save_segs
from qmedsam.memory import DECODER_BYTES_PER_BOX, auto_block_size, memory_limit


def test_cgroup_limits(tmp_path):
    (tmp_path / "memory.max").write_text("1073741824\n")
    assert memory_limit(tmp_path) == 1 << 30
    (tmp_path / "memory.max").write_text("max\n")
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text(str(2 << 30))
    assert memory_limit(tmp_path) == 2 << 30
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text(str(1 << 62))  # "unlimited"
    assert memory_limit(tmp_path) < 1 << 62


def test_auto_block_shrinks_with_memory():
    big = auto_block_size(512, 512, limit=64 << 30)
    small = auto_block_size(512, 512, limit=(1 << 30))
    assert big >= small >= 1
    assert auto_block_size(512, 512, limit=16 << 20) == 1
    assert small * DECODER_BYTES_PER_BOX <= (1 << 30)


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
