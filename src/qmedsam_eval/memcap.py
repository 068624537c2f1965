"""A memory cap for a child process without Docker: a private cgroup (v2 or v1).

Used by ``qmedsam-eval time --local`` to mimic ``docker run -m 8G``.  Creating a
cgroup needs write access to the cgroup file system (root, or a delegated
subtree); where that is missing :func:`memory_cgroup` says why and the caller
runs uncapped.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


def parse_size(text: str) -> int:
    """'8G', '512M', '1073741824' -> bytes."""
    text = text.strip().upper().removesuffix("B")
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def _create(name: str, limit: int) -> Path:
    if (ROOT / "cgroup.controllers").is_file():                       # v2
        group = ROOT / name
        group.mkdir()
        (group / "memory.max").write_text(str(limit))
        if (group / "memory.swap.max").exists():
            (group / "memory.swap.max").write_text("0")
        return group
    group = ROOT / "memory" / name                                    # v1
    group.mkdir()
    (group / "memory.limit_in_bytes").write_text(str(limit))
    swap = group / "memory.memsw.limit_in_bytes"
    if swap.exists():
        swap.write_text(str(limit))
    return group


@contextmanager
def memory_cgroup(limit_bytes: int):
    """Yields ``(preexec_fn, note)``: pass ``preexec_fn`` to ``subprocess``; None when no cap is possible."""
    name = f"qmedsam-eval-{os.getpid()}"
    try:
        group = _create(name, limit_bytes)
    except OSError as e:
        yield None, f"no memory cap ({e.strerror or e}: {ROOT})"
        return
    target = str(group / "cgroup.procs")

    def enter():
        with open(target, "w") as fh:
            fh.write(str(os.getpid()))

    try:
        yield enter, f"memory capped at {limit_bytes / 2**30:.1f} GiB ({group})"
    finally:
        try:
            group.rmdir()
        except OSError:
            pass
