"""Embeddings kept between the two propagation sweeps, bounded in memory.

Up to ``budget_bytes`` stay in RAM; beyond that they spill to a memory-mapped
file in a private temporary folder (never in the outputs), so every slice is
still encoded exactly once whatever the volume's depth.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np


class EmbeddingStore:
    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self.ram: dict[int, np.ndarray] = {}
        self.disk: dict[int, int] = {}
        self._dir: Path | None = None
        self._map: np.memmap | None = None
        self._free: list[int] = []
        self._rows = 0

    def _ram_bytes(self) -> int:
        return sum(a.nbytes for a in self.ram.values())

    def put(self, key: int, emb: np.ndarray) -> None:
        if self._ram_bytes() + emb.nbytes <= self.budget:
            self.ram[key] = emb
            return
        if self._map is None or (not self._free and self._rows == self._map.shape[0]):
            self._grow(emb)
        row = self._free.pop() if self._free else self._take_row()
        self._map[row] = emb
        self.disk[key] = row

    def _take_row(self) -> int:
        self._rows += 1
        return self._rows - 1

    def _grow(self, like: np.ndarray) -> None:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="qmedsam-emb-"))
        old = self._map
        rows = 16 if old is None else 2 * old.shape[0]
        new = np.memmap(self._dir / f"emb-{rows}.dat", dtype=like.dtype, mode="w+", shape=(rows,) + like.shape)
        if old is not None:
            new[: old.shape[0]] = old
            path = Path(old.filename)
            del old
            self._map = None
            path.unlink(missing_ok=True)
        self._map = new

    def pop(self, key: int) -> np.ndarray | None:
        if key in self.ram:
            return self.ram.pop(key)
        if key in self.disk:
            row = self.disk.pop(key)
            self._free.append(row)
            return np.array(self._map[row])
        return None

    def close(self) -> None:
        self.ram.clear()
        self.disk.clear()
        self._map = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
