"""Training samples read lazily from the index: one random label of a slice, its jittered box, flips.

Images, boxes and targets go through the runtime's preprocessing
(:mod:`qmedsam.image.preprocess`), so training sees exactly what inference sees.
Randomness comes from (seed, epoch, sample number) alone, so a resumed run draws
the same samples and augmentations as an uninterrupted one.  Volumes are kept in
a small LRU cache; a file that fails to read is reported once and replaced by
the next sample.
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from qmedsam.image.preprocess import boxes_to_model, image_to_tensor, mask_to_model
from training.data.index import SliceIndex


@dataclass
class Augment:
    jitter: int = 5          # each box side moves by up to this many pixels (original resolution)
    flip: bool = True        # random horizontal and vertical flips


class SliceDataset(torch.utils.data.Dataset):
    def __init__(self, index: SliceIndex, augment: Augment | None = None, seed: int = 0, cache_files: int = 4):
        self.index = index
        self.augment = augment or Augment(jitter=0, flip=False)
        self.seed, self.epoch = seed, 0
        self.cache: OrderedDict[int, tuple[np.ndarray, np.ndarray, tuple]] = OrderedDict()
        self.cache_files = cache_files
        self.bad: set[int] = set()
        self.modality_ids = {m: i for i, m in enumerate(index.modalities)}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.index)

    def _read(self, i: int):
        if i in self.cache:
            self.cache.move_to_end(i)
            return self.cache[i]
        e = self.index.entries[i]
        with np.load(Path(self.index.root) / e.path) as f:
            item = (f["imgs"], f["gts"], tuple(f["spacing"]) if "spacing" in f.files else None)
        if item[0].shape[:item[1].ndim] != item[1].shape:
            raise ValueError(f"imgs {item[0].shape} and gts {item[1].shape} do not match")
        self.cache[i] = item
        while len(self.cache) > self.cache_files:
            self.cache.popitem(last=False)
        return item

    def raw(self, g: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float], str]:
        """(image 2D slice, label slice, in-plane spacing, modality) of global sample ``g``."""
        i, z = self.index.locate(g)
        imgs, gts, spacing = self._read(i)
        e = self.index.entries[i]
        if e.is_3d:
            sp = (spacing[1], spacing[2]) if spacing is not None and len(spacing) == 3 else (1.0, 1.0)
            return imgs[z], gts[z], sp, e.modality
        return imgs, gts, (1.0, 1.0), e.modality

    def __getitem__(self, g: int) -> dict:
        for attempt in range(len(self.index)):
            cand = (int(g) + attempt) % len(self.index)
            i = self.index.locate(cand)[0]
            if i in self.bad:
                continue
            try:
                return self._sample(cand)
            except Exception as e:  # a broken file is skipped, not fatal
                self.bad.add(i)
                warnings.warn(f"skipping unreadable training file {self.index.entries[i].path}: "
                              f"{type(e).__name__}: {e}", stacklevel=2)
        raise RuntimeError("no readable training samples left")

    def _sample(self, g: int) -> dict:
        image, labels, _, modality = self.raw(g)
        rng = np.random.default_rng([self.seed, self.epoch, g])
        present = np.unique(labels)
        present = present[present != 0]
        mask = labels == rng.choice(present)
        if self.augment.flip:
            if rng.random() < 0.5:
                image, mask = image[:, ::-1], mask[:, ::-1]
            if rng.random() < 0.5:
                image, mask = image[::-1], mask[::-1]
        image, mask = np.ascontiguousarray(image), np.ascontiguousarray(mask)
        ys, xs = np.nonzero(mask)
        h, w = mask.shape
        box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float64)
        if self.augment.jitter:
            box += rng.integers(-self.augment.jitter, self.augment.jitter + 1, size=4)
            box = np.clip(box, 0, [w - 1, h - 1, w - 1, h - 1])
            box[2:] = np.maximum(box[2:], box[:2])
        x, geo = image_to_tensor(image)
        return {"image": torch.from_numpy(x[0]),
                "box": torch.from_numpy(boxes_to_model(box[None], geo)[0]),
                "mask": torch.from_numpy(mask_to_model(mask, geo)[None].astype(np.float32)),
                "modality": self.modality_ids[modality], "sample": g}
