"""Zoom for small boxes in large 2D images: which crops to encode, and which boxes each decodes.

At 256 pixels a nucleus of a 2560-pixel-wide image is 2 pixels wide, too small to outline: boxes
under :data:`SMALL_PX` at model input are grouped into crops (:func:`plan_crops`), sparse crops
cut to their boxes and packed into shared 256x256 canvases (:func:`fit_tiles`, :func:`pack`), each
canvas encoded once, within a budget of encoder passes (:func:`zoom_canvases`).  The algorithm in
full and how its thresholds were chosen: docs/decisions/zoom.md.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from qmedsam.image.preprocess import MODEL_SIZE

SMALL_PX = 8           # a box under this (longer side, model-input pixels) is zoomed
TARGET_PX = 48         # crops are sized so that the median small box becomes about this
MARGIN = 0.1           # context around each crop's boxes, as a share of the cell side
MAX_CROPS = 16         # default time budget: crops per image (see above)
CONTEXT = 0.75         # a sparse crop keeps this many median box sides around its boxes
SPARSE_TILE = 128      # a crop is sparse when its cut window, zoomed as its crop, fits this (px)
SPARSE_ZOOM = 0.5      # sparse windows are zoomed by this share of their crop's zoom
SMALL_BOXES_PER_PASS = 8   # at most one zoom encoder pass per this many small boxes (see below)
SHRINK = 0.9           # tiles shrink by this factor until they fit that many canvases


@dataclass(frozen=True)
class Crop:
    y0: int
    x0: int
    y1: int              # exclusive
    x1: int
    boxes: tuple[int, ...]          # indices into the case's boxes

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0


def box_sides(boxes: np.ndarray) -> np.ndarray:
    """Longer side of each inclusive [x0, y0, x1, y1] box, in pixels."""
    b = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    return np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) + 1


def plan_crops(height: int, width: int, boxes: np.ndarray, max_crops: int = MAX_CROPS) -> tuple[list[Crop], np.ndarray]:
    """Crops for the small boxes, and the indices of the boxes left on the plain path."""
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    everything = np.arange(len(boxes))
    if len(boxes) == 0 or max_crops < 1:
        return [], everything
    scale = MODEL_SIZE / max(height, width)
    sides = box_sides(boxes)
    small = np.flatnonzero(sides * scale < SMALL_PX)
    if small.size == 0:
        return [], everything
    cell = float(MODEL_SIZE * np.median(sides[small]) / TARGET_PX)
    cx = (boxes[small, 0] + boxes[small, 2]) / 2
    cy = (boxes[small, 1] + boxes[small, 3]) / 2
    while True:
        if cell >= max(height, width):        # one crop would be the whole image: no zoom
            return [], everything
        keys = np.stack([np.floor(cy / cell), np.floor(cx / cell)], axis=1).astype(np.int64)
        cells, owner = np.unique(keys, axis=0, return_inverse=True)
        if len(cells) <= max_crops:
            break
        cell *= float(np.sqrt(len(cells) / max_crops)) * 1.01
    crops = []
    pad = int(np.ceil(MARGIN * cell))
    for k, (row, col) in enumerate(cells):
        members = small[owner.ravel() == k]
        b = boxes[members]
        y0 = min(int(row * cell), int(b[:, 1].min())) - pad
        x0 = min(int(col * cell), int(b[:, 0].min())) - pad
        y1 = max(int(np.ceil((row + 1) * cell)), int(b[:, 3].max()) + 1) + pad
        x1 = max(int(np.ceil((col + 1) * cell)), int(b[:, 2].max()) + 1) + pad
        crops.append(Crop(max(y0, 0), max(x0, 0), min(y1, height), min(x1, width), tuple(int(i) for i in members)))
    return crops, np.setdiff1d(everything, small)


@dataclass(frozen=True)
class Tile:
    """A window of the image (y0:y1, x0:x1) resized by ``zoom`` into a (height, width) tile of
    a canvas, with the boxes decoded against it."""
    y0: int
    x0: int
    y1: int
    x1: int
    zoom: float
    boxes: tuple[int, ...]

    @property
    def size(self) -> tuple[int, int]:
        return max(1, int((self.y1 - self.y0) * self.zoom + 0.5)), max(1, int((self.x1 - self.x0) * self.zoom + 0.5))


@dataclass(frozen=True)
class Placed:
    tile: Tile
    y: int                  # top-left corner in the canvas
    x: int


def fit_tiles(crops: list[Crop], boxes: np.ndarray) -> list[Tile]:
    """Each crop as a tile: a dense crop whole, zoomed to fill the canvas (what one crop per pass
    gives); a sparse one cut to its boxes plus :data:`CONTEXT` and zoomed less (see the module)."""
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    tiles = []
    for c in crops:
        zoom = MODEL_SIZE / max(c.shape)
        b = boxes[list(c.boxes)]
        pad = int(np.ceil(CONTEXT * np.median(box_sides(b))))
        y0, x0 = max(int(b[:, 1].min()) - pad, c.y0), max(int(b[:, 0].min()) - pad, c.x0)
        y1, x1 = min(int(b[:, 3].max()) + 1 + pad, c.y1), min(int(b[:, 2].max()) + 1 + pad, c.x1)
        if max(y1 - y0, x1 - x0) * zoom <= SPARSE_TILE:
            tiles.append(Tile(y0, x0, y1, x1, zoom * SPARSE_ZOOM, c.boxes))
        else:
            tiles.append(Tile(c.y0, c.x0, c.y1, c.x1, zoom, c.boxes))
    return tiles


def pack(tiles: list[Tile], side: int = MODEL_SIZE) -> list[list[Placed]]:
    """Tiles shelf-packed into side x side canvases (tallest first; each shelf filled left to
    right, a new shelf below when the tile does not fit, a new canvas when no shelf fits)."""
    canvases: list[list[Placed]] = []
    shelves: list[list[list[int]]] = []         # per canvas: [top, height, used width] per shelf
    for tile in sorted(tiles, key=lambda t: -t.size[0]):
        h, w = tile.size
        if h > side or w > side:
            raise ValueError(f"tile {h}x{w} larger than the {side}x{side} canvas")
        for canvas, rows in zip(canvases, shelves):
            spot = next((r for r in rows if h <= r[1] and r[2] + w <= side), None)
            if spot is None and rows[-1][0] + rows[-1][1] + h <= side:
                rows.append([rows[-1][0] + rows[-1][1], h, 0])
                spot = rows[-1]
            if spot is not None:
                canvas.append(Placed(tile, spot[0], spot[2]))
                spot[2] += w
                break
        else:
            canvases.append([Placed(tile, 0, 0)])
            shelves.append([[0, h, w]])
    return canvases


def zoom_canvases(height: int, width: int, boxes: np.ndarray, max_crops: int = MAX_CROPS):
    """The canvases to encode for the small boxes of an (height, width) image, and the indices of
    the boxes left on the plain path.  At most one canvas per :data:`SMALL_BOXES_PER_PASS` small
    boxes (rounded up): an encoder pass costs about as much as decoding that many boxes, so zoom
    at most doubles its boxes' share of the work; where the packed tiles need more canvases, every
    tile is zoomed less (by :data:`SHRINK` per step) until they fit."""
    crops, plain = plan_crops(height, width, boxes, max_crops)
    if not crops:
        return [], plain
    budget = -(-sum(len(c.boxes) for c in crops) // SMALL_BOXES_PER_PASS)
    tiles = fit_tiles(crops, boxes)
    canvases = pack(tiles)
    while len(canvases) > budget:
        tiles = [replace(t, zoom=t.zoom * SHRINK) for t in tiles]
        canvases = pack(tiles)
    return canvases, plain
