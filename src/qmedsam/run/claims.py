"""Per-case claims in the outputs folder, so that several processes (``--jobs`` workers, Ray actors,
two runs started on one folder) never work on one case at once.

A claim is an exclusive ``flock`` on ``OUTPUTS/.qmedsam-claims/<case>.lock``: the kernel drops it
when its holder dies, SIGKILL included, so a lost worker's case can be taken again at once.  The
holder writes the case's result into the lock file once its output is in place, so that a retry
of the same run (Ray re-running the task of an actor that died just after writing) returns that
result instead of writing the case a second time.
"""
from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path

FOLDER = ".qmedsam-claims"


class Claim:
    def __init__(self, fd: int, path: Path, run_id: str):
        self.fd, self.path, self.run_id = fd, path, run_id
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 1 << 20).decode(errors="replace")
        run, _, result = text.partition("\n")
        # the result this run stored for the case before (its first attempt died after writing)
        self.done: dict | None = json.loads(result) if run == run_id and result else None

    def clear_partials(self, outputs: Path, name: str) -> None:
        """Remove temporary files a killed writer of this case left (qmedsam.cases.atomic names them
        '.<case>.*.part'); only the claim's holder may, as no one else writes the case now."""
        for stale in outputs.glob(f".{name}.*.part"):
            stale.unlink(missing_ok=True)

    def finish(self, result: dict) -> None:
        """Record the case's result for this run's retries (the lock is released when the claim's
        ``with`` block ends; the run drops the file once the result has reached it: :func:`release`)."""
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{self.run_id}\n{json.dumps(result)}".encode(), 0)


def _lock(folder: Path, path: Path) -> int | None:
    """An fd holding the exclusive lock on ``path``, or None where another process holds it.  The
    file must still be the one at ``path`` once locked: another process may have dropped it
    (:func:`release`) between our open and our lock, and a lock on a dropped file keeps no one out."""
    while True:
        try:
            folder.mkdir(exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:        # the folder was removed between the two calls: again
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextmanager
def claimed(outputs: Path, name: str, run_id: str):
    """Yield a :class:`Claim` on case ``name``, or None where another process holds it now."""
    folder = outputs / FOLDER
    path = folder / f"{name}.lock"
    fd = _lock(folder, path)
    if fd is None:
        yield None
        return
    try:
        yield Claim(fd, path, run_id)
    finally:
        os.close(fd)


def release(outputs: Path, name: str) -> None:
    """Drop case ``name``'s lock file: its result has reached the run, so no retry will need it."""
    path = outputs / FOLDER / f"{name}.lock"
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)    # not while another run works on the case
        if os.fstat(fd).st_ino == os.stat(path).st_ino:
            path.unlink()
    except (BlockingIOError, FileNotFoundError):
        pass
    finally:
        os.close(fd)


def remove_folder(outputs: Path) -> None:
    """Remove the claims folder at the end of a run, unless another run still holds claims there."""
    try:
        (outputs / FOLDER).rmdir()
    except OSError:
        pass


@contextmanager
def folder_lock(outputs: Path):
    """An exclusive lock on the outputs folder itself, held while ``efficiency.csv`` is merged."""
    fd = os.open(outputs, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
