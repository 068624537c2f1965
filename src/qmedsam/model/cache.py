"""The compile cache: whether a folder can hold it, and one writer per entry across processes.

OpenVINO writes a cache entry in place and maps entries when it imports them, so a process that
imports an entry while another process is still writing it dies of SIGBUS (measured: 1 of 24
processes, four at a time compiling the models into one empty cache).  ``--jobs`` workers, Ray
actors on one node and two runs on one outputs folder share a cache, so the first compile of each
graph and setting is done by one process at a time, under a lock file; a marker written after that
compile lets every later load skip the lock.  The files live in ``CACHE/qmedsam-locks/`` (no dot:
emptying the cache folder with ``rm -rf CACHE/*`` removes them with the entries).
"""
from __future__ import annotations

import fcntl
import hashlib
import os
from contextlib import contextmanager
from pathlib import Path

FOLDER = "qmedsam-locks"


def entry_key(model_path: Path, config: dict, version: str) -> str:
    """What names a cache entry for us: the graph's files (path, size, mtime), the compile settings
    and OpenVINO's version (a new export or a new OpenVINO writes a new entry)."""
    parts = [version, str(model_path.resolve())]
    for f in (model_path, model_path.with_suffix(".bin")):
        try:
            st = f.stat()
            parts.append(f"{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append("-")
    parts += sorted(f"{k}={v}" for k, v in config.items())
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:20]


@contextmanager
def first_compile(cache_dir: Path | None, key: str):
    """Hold this while compiling with the cache: a no-op once the entry is known complete, else an
    exclusive lock (waiting for another process's compile of the same entry).  Yields a callable
    that marks the entry complete; call it after a compile that went through the cache."""
    if cache_dir is None:
        yield lambda: None
        return
    folder = cache_dir / FOLDER
    ready = folder / f"{key}.ready"
    if ready.exists():
        yield lambda: None
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:         # a cache folder we may read but not lock in: compile as before
        yield lambda: None
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield lambda: ready.touch()
    finally:
        os.close(fd)        # drops the lock


def cache_problem(path: Path) -> str | None:
    """None when ``path`` can hold the compile cache (created if need be), else the reason."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return None
    except OSError as e:
        return e.strerror or str(e)
