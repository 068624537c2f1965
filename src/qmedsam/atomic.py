"""Atomic file writes: a temporary file beside the target, then rename."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


def _replace_from_temp(target: Path, write) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name starts with '.' and does not end in .npz: never mistaken for a result.
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results must be readable by the organisers
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_segs(target: Path, segs: np.ndarray) -> None:
    save_npz(target, segs=segs)


def save_npz(target: Path, **arrays) -> None:
    _replace_from_temp(target, lambda f: np.savez_compressed(f, **arrays))


def save_text(target: Path, text: str) -> None:
    _replace_from_temp(target, lambda f: f.write(text.encode()))
