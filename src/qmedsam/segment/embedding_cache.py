"""Slice embeddings kept between the processes of one interactive case, in the outputs folder.

The interactive contract runs every round in a fresh container with the outputs folder kept, so a
click round finds here the slices the box round encoded.  Files are keyed by the slice's content,
the encoder graph and the models, written by rename (a reader never sees half a file, two runs may
share the folder) and the oldest are dropped once the folder passes its size bound.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from qmedsam.cases.atomic import replacing

FOLDER = "embeddings"            # under the compile-cache folder
LIMIT_BYTES = 1 << 30            # the folder's bound: about 250 slices of 256x64x64 float32


class EmbeddingCache:
    def __init__(self, folder: Path, salt: str, limit: int = LIMIT_BYTES):
        self.folder, self.salt, self.limit = Path(folder), salt, limit
        self.written = 0

    def _path(self, image: np.ndarray) -> Path:
        h = hashlib.blake2b(digest_size=16)
        h.update(f"{self.salt}|{image.shape}|{image.dtype}".encode())
        h.update(np.ascontiguousarray(image).data)
        return self.folder / f"{h.hexdigest()}.npy"

    def get(self, image: np.ndarray) -> np.ndarray | None:
        """The embedding stored for this slice, or None (absent, dropped meanwhile, or not readable)."""
        try:
            emb = np.load(self._path(image), allow_pickle=False)
        except (OSError, ValueError):
            return None
        return emb if emb.dtype == np.float32 and emb.ndim == 4 else None

    def put(self, image: np.ndarray, emb: np.ndarray) -> None:
        path = self._path(image)
        if path.exists():
            return
        with replacing(path, suffix=".npy") as tmp:
            np.save(tmp, emb)
        self.written += emb.nbytes

    def trim(self) -> None:
        """Drop the oldest files beyond the bound (other runs may be dropping the same ones)."""
        if not self.written:
            return
        entries = []
        for p in self.folder.glob("*.npy"):
            try:
                st = p.stat()
            except OSError:
                continue
            entries.append((st.st_mtime, st.st_size, p))
        total = sum(e[1] for e in entries)
        for _, size, p in sorted(entries):
            if total <= self.limit:
                break
            try:
                os.unlink(p)
            except OSError:
                pass
            total -= size
