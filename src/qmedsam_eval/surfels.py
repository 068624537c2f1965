"""Surface elements of a binary mask, cube by cube (2x2 squares in 2D, 2x2x2 cubes in 3D).

Every cube of the grid gets a code from its corners (bit set where the corner is
inside); a cube whose code is neither 0 nor all-ones carries a piece of the
surface, whose size (contour length in 2D, area in 3D, in mm) is looked up by
code.  The pieces are the marching-squares / marching-cubes polygons through the
edge midpoints, built here from the cube geometry:

* on each face, a sign change along an edge puts a vertex at its midpoint; a face
  with two diagonal inside corners is cut around the inside corners when the cube
  has at most half its corners inside, around the outside corners otherwise;
* the face segments close into polygons, which are split into a fan of
  triangles; each triangle's area vector is scaled by the spacing.

A planar polygon's area does not depend on the fan; a non-planar one (pentagons
and hexagons, 104 codes) does.  ``_FAN_APEX`` names the apex vertex for those
codes (edge midpoint, coordinates doubled) so that every area equals the table
of DeepMind's ``surface-distance`` package to machine precision, for any
spacing; the organisers score with that package.  The numbers were read off its
table by matching the areas under three anisotropic spacings.

Bit order: the corner at offset (a, b[, c]) of the cube has weight
``2 ** (7 - (4a + 2b + c))`` in 3D and ``2 ** (3 - (2a + b))`` in 2D.
"""
from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np

# apex of the fan for codes whose polygons have five or more vertices (one per such polygon)
_FAN_APEX = {
    7: "102", 11: "100", 13: "122", 14: "102", 19: "012", 21: "021", 23: "021", 27: "021",
    29: "012", 30: "102", 31: "102", 35: "010", 39: "021", 42: "021", 43: "010", 45: "122",
    46: "010", 47: "122", 49: "010", 50: "012", 53: "102", 54: "012", 55: "012", 57: "010",
    58: "122", 59: "010", 69: "001", 71: "012", 75: "100", 76: "012", 77: "012", 78: "001",
    79: "100", 81: "001", 83: "102", 84: "021", 86: "021", 87: "021", 89: "001", 92: "100",
    93: "001", 99: "010", 101: "001", 106: "021", 108: "012", 112: "102", 113: "010", 114: "001",
    115: "010", 116: "010", 117: "001", 120: "102", 135: "102", 138: "001", 139: "010",
    140: "010", 141: "001", 142: "010", 143: "102", 147: "012", 149: "021", 154: "001",
    156: "010", 162: "001", 163: "100", 166: "001", 168: "021", 169: "021", 171: "021",
    172: "102", 174: "001", 176: "100", 177: "001", 178: "012", 179: "012", 180: "100",
    184: "012", 186: "001", 196: "010", 197: "122", 198: "010", 200: "012", 201: "012",
    202: "102", 205: "012", 206: "010", 208: "122", 209: "010", 210: "122", 212: "010",
    213: "021", 216: "021", 220: "010", 224: "102", 225: "102", 226: "012", 228: "021",
    232: "021", 234: "021", 236: "012", 241: "102", 242: "122", 244: "100", 248: "102",
}


def corner_weights(ndim: int) -> np.ndarray:
    """Weight of each corner offset, shape (2,)*ndim."""
    n = 2 ** ndim
    return (2 ** (n - 1 - np.arange(n))).reshape((2,) * ndim)


def _faces(ndim: int):
    """Each face of the unit cube (square) as its corners in cyclic order (doubled coords)."""
    if ndim == 2:
        return [[(0, 0), (0, 2), (2, 2), (2, 0)]]
    faces = []
    for axis in range(3):
        u, v = [a for a in range(3) if a != axis]
        for side in (0, 2):
            cyc = []
            for p, q in ((0, 0), (2, 0), (2, 2), (0, 2)):
                c = [0, 0, 0]
                c[axis], c[u], c[v] = side, p, q
                cyc.append(tuple(c))
            faces.append(cyc)
    return faces


def _segments(code: int, ndim: int):
    weights = corner_weights(ndim)
    inside = {c: bool(code & int(weights[tuple(x // 2 for x in c)]))
              for c in itertools.product((0, 2), repeat=ndim)}
    cut_inside = bin(code).count("1") <= 2 ** ndim // 2
    segs = []
    for cyc in _faces(ndim):
        flags = [inside[c] for c in cyc]
        mids = [tuple((a + b) // 2 for a, b in zip(cyc[i], cyc[(i + 1) % 4]))
                if flags[i] != flags[(i + 1) % 4] else None for i in range(4)]
        found = [m for m in mids if m is not None]
        if len(found) == 2:
            segs.append(tuple(found))
        elif len(found) == 4:        # two diagonal corners in: cut around the minority side
            for k in range(4):
                if flags[k] == cut_inside:
                    segs.append((mids[k - 1], mids[k]))
    return segs


def _polygons(code: int):
    segs = _segments(code, 3)
    polys = []
    while segs:
        ring = list(segs.pop(0))
        while True:
            for j, (p, q) in enumerate(segs):
                if ring[-1] in (p, q):
                    ring.append(q if p == ring[-1] else p)
                    segs.pop(j)
                    break
            else:
                break
        polys.append(ring[:-1])   # closed: last vertex repeats the first
    return polys


@lru_cache(maxsize=None)
def _triangle_vectors() -> tuple[np.ndarray, ...]:
    """Per 3D code: (T, 3) area vectors of its triangles for unit spacing."""
    out = []
    for code in range(256):
        apexes = _FAN_APEX.get(code, "").split()
        vecs = []
        for poly in _polygons(code):
            pts = np.array(poly, dtype=np.float64) / 2.0
            if len(poly) >= 5:
                key = tuple(int(ch) for ch in apexes.pop(0))
                pts = np.roll(pts, -poly.index(key), axis=0)
            for i in range(1, len(pts) - 1):
                vecs.append(0.5 * np.cross(pts[i] - pts[0], pts[i + 1] - pts[0]))
        out.append(np.array(vecs).reshape(-1, 3))
    return tuple(out)


def area_table(spacing) -> np.ndarray:
    """(256,) surfel area in mm^2 per 3D code for voxel spacing (s0, s1, s2)."""
    s0, s1, s2 = (float(s) for s in spacing)
    scale = np.array([s1 * s2, s0 * s2, s0 * s1])
    return np.array([np.linalg.norm(v * scale, axis=1).sum() for v in _triangle_vectors()])


def length_table(spacing) -> np.ndarray:
    """(16,) contour length in mm per 2D code for pixel spacing (s0, s1)."""
    scale = np.array([float(s) for s in spacing]) / 2.0
    table = np.zeros(16)
    for code in range(16):
        for a, b in _segments(code, 2):
            table[code] += float(np.linalg.norm((np.array(a) - np.array(b)) * scale))
    return table


def cube_codes(mask: np.ndarray) -> np.ndarray:
    """Code of every cube of a 2D/3D bool mask padded by one voxel of background on each side.

    Output shape is ``mask.shape + 1``: cube ``i`` has corners ``i - 1`` and ``i`` per axis.
    """
    ndim = mask.ndim
    padded = np.pad(mask.astype(np.uint8), 1)
    weights = corner_weights(ndim)
    codes = np.zeros(tuple(n + 1 for n in mask.shape), np.uint8)
    for offset in itertools.product((0, 1), repeat=ndim):
        sl = tuple(slice(o, o + n + 1) for o, n in zip(offset, mask.shape))
        codes += padded[sl] * np.uint8(weights[offset])
    return codes
