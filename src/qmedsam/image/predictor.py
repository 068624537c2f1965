"""One image and everything about it: the one object the API, the 3D modes, zoom and the guard decode through.

An :class:`ImagePredictor` owns an image's geometry, its embedding and the decoder's per-image
state (:class:`~qmedsam.model.model.DecoderState`); it decodes boxes in blocks of at most
``max_boxes`` (only one block's logits are held at a time), crops the logits to the image's
valid window and pastes masks into a label map through a confidence map
(:func:`qmedsam.image.masks.paste_mask`).  Many can be live on one model at once: none
re-prepares another.  Setting a new image re-uses the object's state memory.
"""
from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np

from qmedsam.image.masks import box_mask, paste_mask
from qmedsam.image.preprocess import Geometry, boxes_to_model, image_to_tensor
from qmedsam.segment.ledger import Ledger


class NoImageError(RuntimeError):
    """Decoding was asked of a predictor before its image was set."""


class Prediction(NamedTuple):
    """One prompt's answer: the image's boolean mask (H, W), the decoder's predicted IoU, and the
    low-res logits (256, 256) in the model's frame (the next call's ``mask_input``)."""

    mask: np.ndarray
    iou: float
    low_res_logits: np.ndarray


class ImagePredictor:
    """Decoding against one image on ``model``: :meth:`set_image` (or :meth:`set_embedding`), then
    :meth:`predict`, :meth:`logits` or :meth:`paste`.  ``ledger`` counts its decoding."""

    def __init__(self, model, max_boxes: int = 8, ledger: Ledger | None = None):
        self.model, self.max_boxes = model, max_boxes
        self.ledger = ledger if ledger is not None else Ledger()
        self.geo: Geometry | None = None
        self.embedding: np.ndarray | None = None
        self._state = None

    def set_image(self, image: np.ndarray, encoder: str) -> "ImagePredictor":
        """Encode a checked 2D image (H, W) or (H, W, 3) uint8 with encoder graph ``encoder``."""
        tensor, geo = image_to_tensor(image)
        embedding, seconds = self.model.encode(tensor, encoder)
        self.ledger.count_pass(encoder, seconds)
        return self.set_embedding(embedding, geo)

    def set_embedding(self, embedding: np.ndarray, geo: Geometry, last: bool = False) -> "ImagePredictor":
        """The per-image decoder step for ``embedding`` of an image of geometry ``geo``; with ``last``
        (no other image of the case follows) the step's scratch memory is freed right after."""
        t = time.perf_counter()
        self.geo, self.embedding = geo, embedding
        self._state = self.model.prepare(embedding, self._state)
        if last:
            self.model.release_prepare()
        self.ledger.decode_s += time.perf_counter() - t
        return self

    def decode(self, boxes: np.ndarray):
        """One decoder call for boxes (B, 1, 4) in 256-space: (logits (B, 1, 256, 256), IoU (B,))."""
        if self._state is None:
            raise NoImageError("decoding before an image is set: call set_image first")
        t = time.perf_counter()
        out = self.model.decode(self._state, boxes)
        ledger = self.ledger
        ledger.decode_s += time.perf_counter() - t
        ledger.decoder_calls += 1
        ledger.boxes_decoded += len(boxes)
        ledger.tick()
        return out

    def crop(self, logits: np.ndarray) -> np.ndarray:
        """The valid window of one box's (256, 256) logits (the image inside the padded frame)."""
        h, w = self.geo.resized
        return logits[:h, :w]

    def logits(self, boxes: np.ndarray) -> list[np.ndarray]:
        """Each box's logits in the valid window (copies), block by block."""
        out = []
        for s in range(0, len(boxes), self.max_boxes):
            logits, _ = self.decode(boxes[s:s + self.max_boxes])
            out += [self.crop(logits[k, 0]).copy() for k in range(len(logits))]
        return out

    def paste(self, boxes: np.ndarray, labels: np.ndarray, seg: np.ndarray, best: np.ndarray,
              follow=None) -> list | None:
        """Decode boxes (B, 1, 4) in 256-space and paste each mask into ``seg`` as its label where it
        beats ``best``; with ``follow`` (a function of a mask's valid logits) returns its value per box."""
        out = [] if follow else None
        for s in range(0, len(boxes), self.max_boxes):
            logits, _ = self.decode(boxes[s:s + self.max_boxes])
            for k in range(len(logits)):
                crop = self.crop(logits[k, 0])
                paste_mask(seg, crop, int(labels[s + k]), best)
                if follow:
                    out.append(follow(crop))
        return out

    def predict(self, boxes) -> tuple[np.ndarray, np.ndarray]:
        """(boolean masks (B, H, W) of the image, predicted IoU (B,)) for pixel boxes (B, 4) [x0, y0,
        x1, y1], inclusive; each mask is what the command line pastes for that box alone."""
        model_boxes = boxes_to_model(boxes, self.geo)
        masks = np.zeros((len(model_boxes), self.geo.height, self.geo.width), bool)
        ious = np.empty(len(model_boxes), np.float32)
        for s in range(0, len(model_boxes), self.max_boxes):
            logits, iou = self.decode(model_boxes[s:s + self.max_boxes])
            ious[s:s + len(iou)] = iou
            for k in range(len(logits)):
                masks[s + k] = box_mask(self.crop(logits[k, 0]), self.geo.height, self.geo.width)
        return masks, ious

    def prompt(self, box=None, points=None, point_labels=None, mask_input=None) -> Prediction:
        """SAM's prompts against the image, in its pixels: a box [x0, y0, x1, y1] (inclusive), points
        (N, 2) as (x, y) with labels (N,) (1 foreground, 0 background), a previous low-res logit map
        (256, 256); any of them, together.  A box alone decodes as :meth:`predict` does."""
        geo = self.geo
        if self._state is None:
            raise NoImageError("decoding before an image is set: call set_image first")
        if points is None and mask_input is None:
            logits, iou = self.decode(boxes_to_model(np.asarray(box)[None], geo))
            return Prediction(box_mask(self.crop(logits[0, 0]), geo.height, geo.width), float(iou[0]),
                              logits[0, 0].copy())
        coords, labels = np.zeros((0, 2)), np.zeros(0)
        if points is not None:
            coords = np.asarray(points, np.float64).reshape(-1, 2) * geo.scale
            labels = np.asarray(point_labels, np.float64).reshape(-1)
        if box is not None:
            corners = boxes_to_model(np.asarray(box)[None], geo).reshape(2, 2)
            coords, labels = np.concatenate([coords, corners]), np.concatenate([labels, [2, 3]])
        else:                                  # SAM pads a prompt without a box with one "no point"
            coords, labels = np.concatenate([coords, [[0, 0]]]), np.concatenate([labels, [-1]])
        t = time.perf_counter()
        logits, iou = self.model.prompt_decoder().decode(self.embedding, coords, labels, mask_input)
        self.ledger.decode_s += time.perf_counter() - t
        self.ledger.decoder_calls += 1
        return Prediction(box_mask(self.crop(logits), geo.height, geo.width), iou, logits)
