"""Write 8-bit RGB images as PNG with the standard library (the runtime has no imaging package)."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from qmedsam.atomic import replacing


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(rgb: np.ndarray) -> bytes:
    """(H, W, 3) or (H, W) uint8 -> PNG bytes (filter 0 on every row, zlib level 6)."""
    img = np.ascontiguousarray(rgb, dtype=np.uint8)
    if img.ndim == 2:
        color = 0
    elif img.ndim == 3 and img.shape[2] == 3:
        color = 2
    else:
        raise ValueError(f"expected (H, W) or (H, W, 3) uint8, got {img.shape}")
    h, w = img.shape[:2]
    raw = np.concatenate([np.zeros((h, 1), np.uint8), img.reshape(h, -1)], axis=1).tobytes()
    header = struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b"")


def write_png(path: Path, rgb: np.ndarray) -> None:
    with replacing(path) as tmp:
        tmp.write_bytes(encode_png(rgb))
