"""Online index of a challenge-style training tree: samples are labelled slices, never a decompressed copy.

Each ``.npz`` case contributes its labelled slices (a 2D image: one; a 3D volume:
the slices holding any label).  A global sample number maps to (file, slice)
through the cumulative counts and ``bisect``.  Building reads only each file's
``gts`` member, one file at a time per worker, so memory stays bounded by the
largest label volume.  The index is cached beside the data (or under
``~/.cache/qmedsam`` when the tree is read-only) and rebuilt for the files
whose size or modification time changed.  Unreadable files are skipped with a
warning.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import os
import sys
import warnings
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from qmedsam.cases.atomic import replacing
from qmedsam.cases.read import modality_of

CACHE_NAME = ".qmedsam-index.json"
VERSION = 1


@dataclass
class Entry:
    path: str            # relative to the root
    size: int
    mtime_ns: int
    modality: str
    is_3d: bool
    slices: list[int]    # labelled slice numbers (2D: [0])


def modality_for(rel: str) -> str:
    """First folder level under the root, else the second ``_`` field of the name."""
    parts = Path(rel).parts
    return parts[0] if len(parts) > 1 else modality_of(rel)


def labelled_slices(path: Path) -> tuple[bool, list[int]]:
    """(is_3d, labelled slice numbers) from the ``gts`` member only."""
    with np.load(path) as f:
        gts = f["gts"]
    if gts.ndim == 3:
        return True, np.flatnonzero(gts.reshape(gts.shape[0], -1).any(axis=1)).tolist()
    if gts.ndim != 2:
        raise ValueError(f"gts has shape {gts.shape}")
    return False, [0] if gts.any() else []


def _scan(root: Path) -> list[tuple[str, int, int]]:
    found = []
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False) and not e.name.startswith("."):
                    stack.append(Path(e.path))
                elif e.name.endswith(".npz") and not e.name.startswith("."):
                    st = e.stat()
                    found.append((str(Path(e.path).relative_to(root)), st.st_size, st.st_mtime_ns))
    return sorted(found)


def _read_one(args):
    root, rel, size, mtime = args
    try:
        is_3d, slices = labelled_slices(Path(root) / rel)
        return Entry(rel, size, mtime, modality_for(rel), is_3d, slices), None
    except Exception as e:  # a corrupt file must not stop the build
        return None, f"{rel}: {type(e).__name__}: {e}".replace("\n", " ")


@dataclass
class SliceIndex:
    root: Path
    entries: list[Entry]
    skipped: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.entries = [e for e in self.entries if e.slices]
        self.cumulative = np.concatenate([[0], np.cumsum([len(e.slices) for e in self.entries])]).astype(np.int64)
        self.modalities = sorted({e.modality for e in self.entries})

    def __len__(self) -> int:
        return int(self.cumulative[-1])

    def locate(self, g: int) -> tuple[int, int]:
        """Global sample number -> (entry number, slice number)."""
        if not 0 <= g < len(self):
            raise IndexError(g)
        i = bisect.bisect_right(self.cumulative, g) - 1
        return i, self.entries[i].slices[g - int(self.cumulative[i])]

    def samples_of(self, entry_ids) -> np.ndarray:
        """All global sample numbers of the given entries."""
        parts = [np.arange(self.cumulative[i], self.cumulative[i + 1]) for i in entry_ids]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    def split(self, val_fraction: float = 0.1, seed: int = 0) -> tuple[list[int], list[int]]:
        """(train, validation) entry numbers, by case, fixed by seed; stratified per modality."""
        train, val = [], []
        for m in self.modalities:
            ids = [i for i, e in enumerate(self.entries) if e.modality == m]
            key = lambda i: hashlib.sha256(f"{seed}:{self.entries[i].path}".encode()).hexdigest()  # noqa: E731
            ids.sort(key=key)
            n_val = int(round(len(ids) * val_fraction)) if len(ids) > 1 else 0
            val += ids[:n_val]
            train += ids[n_val:]
        return sorted(train), sorted(val)


def _cache_path(root: Path) -> Path:
    if os.access(root, os.W_OK):
        return root / CACHE_NAME
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return Path.home() / ".cache" / "qmedsam" / f"index-{digest}.json"


def build_index(root: Path, workers: int | None = None, progress: bool = True) -> SliceIndex:
    root = Path(root)
    listing = _scan(root)
    cache = _cache_path(root)
    known: dict[str, Entry] = {}
    if cache.is_file():
        try:
            blob = json.loads(cache.read_text())
            if blob.get("version") == VERSION:
                known = {e["path"]: Entry(**e) for e in blob["entries"]}
        except (ValueError, KeyError, TypeError):
            known = {}
    entries, todo = [], []
    for rel, size, mtime in listing:
        e = known.get(rel)
        if e is not None and e.size == size and e.mtime_ns == mtime:
            entries.append(e)
        else:
            todo.append((str(root), rel, size, mtime))
    skipped = []
    if todo:
        workers = workers or max(1, min(len(todo) // 64 + 1, os.cpu_count() or 1))
        it = map(_read_one, todo) if workers == 1 else None
        pool = None
        if it is None:
            pool = get_context("spawn").Pool(workers)
            it = pool.imap(_read_one, todo, chunksize=16)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=len(todo), desc=f"indexing {root.name}", unit="file", file=sys.stderr)
        for entry, problem in it:
            if entry is not None:
                entries.append(entry)
            else:
                skipped.append(problem)
                warnings.warn(f"skipping unreadable training file {problem}", stacklevel=2)
        if pool is not None:
            pool.close()
            pool.join()
        entries.sort(key=lambda e: e.path)
        blob = {"version": VERSION, "entries": [e.__dict__ for e in entries]}
        try:
            with replacing(cache) as tmp:
                tmp.write_text(json.dumps(blob, separators=(",", ":")))
        except OSError as e:
            warnings.warn(f"index cache not written ({e})", stacklevel=2)
    return SliceIndex(root, entries, skipped)
