"""Atomic file writes: a temporary file beside the target, then rename.

Every file the project writes for others to read (results, CSVs, overlays, caches,
checkpoints, converted images) goes through :func:`replacing`, so an interrupted
run never leaves a half-written file under the final name.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np


@contextmanager
def replacing(target: Path, suffix: str = ".part"):
    """Yield a temporary path beside ``target``; on success it is made readable (0644) and renamed
    over ``target``, on any failure removed.  The name starts with '.' and ends in ``suffix`` (give
    the target's own extension for writers that choose the format by it): never taken for a result."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results must be readable by the organisers
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_bytes(target: Path, write) -> None:
    with replacing(target) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def save_segs(target: Path, segs: np.ndarray) -> None:
    save_npz(target, segs=segs)


def save_npz(target: Path, **arrays) -> None:
    _write_bytes(target, lambda f: np.savez_compressed(f, **arrays))


def save_text(target: Path, text: str) -> None:
    _write_bytes(target, lambda f: f.write(text.encode()))
