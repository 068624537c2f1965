"""One encoded image (a 2D image, a slice, a zoom canvas) and the decoding done against it.

An :class:`ImageSession` owns an image's embedding once it is set into the decoder (the
per-image decoder step runs then, once; again only if another session on the same engine has set
its own image since, so that sessions never decode against each other's state), decodes boxes
against it in blocks of at most
``max_boxes`` (the one block loop of the runtime: only one block's logits are held at a time),
and pastes each mask into a label map through the image's confidence map
(:func:`qmedsam.masks.paste_mask`).  It refuses to decode before an image is set.  The 2D,
zoom and 3D modes of :mod:`qmedsam.segment` are plans over such sessions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol

import numpy as np

from qmedsam.masks import paste_mask
from qmedsam.model_spec import DECODER_IMAGE
from qmedsam.preprocess import Geometry


class EngineLike(Protocol):
    """What segmenting needs of an engine: :class:`qmedsam.engine.Engine` and the test doubles."""

    def start_encode(self, tensor: np.ndarray): ...

    def finish_encode(self, handle) -> np.ndarray: ...

    def encode(self, tensor: np.ndarray) -> np.ndarray: ...

    def prepare(self, embedding: np.ndarray) -> None: ...

    def decode(self, boxes: np.ndarray, with_iou: bool = False): ...

    def release(self, graph: str) -> None: ...


class NoImageError(RuntimeError):
    """Decoding was asked of a session before its image was set."""


@dataclass
class Target:
    """Where an image's masks go: its label map, confidence map and geometry (the logits'
    valid window is ``geo.resized``)."""

    seg: np.ndarray
    best: np.ndarray
    geo: Geometry

    def paste(self, logits: np.ndarray, label: int) -> np.ndarray:
        """Paste one box's (256, 256) logits; returns the valid crop of them."""
        new_h, new_w = self.geo.resized
        crop = logits[:new_h, :new_w]
        paste_mask(self.seg, crop, label, self.best)
        return crop


class ImageSession:
    """Decoding against one image: :meth:`set_image` once, then :meth:`blocks`, :meth:`masks` or
    :meth:`paste` for its boxes.  ``stats`` counts decoder calls (``decoder_calls``)."""

    def __init__(self, engine: EngineLike, max_boxes: int, stats):
        self.engine, self.max_boxes, self.stats = engine, max_boxes, stats
        self._set = False
        self._embedding: np.ndarray | None = None
        self._token = None          # the engine's token of the decoder state set from this image

    def set_image(self, embedding: np.ndarray, last: bool = False) -> "ImageSession":
        """The per-image decoder step for ``embedding``; with ``last`` (no other image of the case
        follows) its scratch memory is freed right after."""
        self._embedding = embedding
        self._token = self.engine.prepare(embedding)
        if last:
            self.engine.release(DECODER_IMAGE.name)
        self._set = True
        return self

    def decode(self, boxes: np.ndarray, with_iou: bool = False):
        """One decoder call for boxes (B, 1, 4) in 256-space."""
        if not self._set:
            raise NoImageError("decoding before an image is set: call set_image first")
        if self._token is not None and getattr(self.engine, "prepared_token", self._token) != self._token:
            self._token = self.engine.prepare(self._embedding)     # another session's image was set since
        self.stats.decoder_calls += 1
        out = self.engine.decode(boxes, with_iou=with_iou)
        self.stats.boxes_decoded += len(boxes)
        self.stats.tick()
        return out

    def blocks(self, boxes: np.ndarray, with_iou: bool = False) -> Iterator[tuple[int, object]]:
        """(start, decoder output) for consecutive blocks of at most ``max_boxes`` of ``boxes``."""
        for s in range(0, len(boxes), self.max_boxes):
            yield s, self.decode(boxes[s:s + self.max_boxes], with_iou)

    def masks(self, boxes: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """(i, (256, 256) logits) of each box, block by block."""
        for s, logits in self.blocks(boxes):
            for k in range(logits.shape[0]):
                yield s + k, logits[k, 0]

    def paste(self, boxes: np.ndarray, labels: np.ndarray, target: Target, follow=None) -> list | None:
        """Decode and paste each box's mask as its label; with ``follow`` (a function of a mask's
        valid logits) returns its value for each box, e.g. the next propagation prompt."""
        out = [] if follow else None
        for i, logits in self.masks(boxes):
            crop = target.paste(logits, int(labels[i]))
            if follow:
                out.append(follow(crop))
        return out
