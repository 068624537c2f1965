"""Unlabelled views and the float teacher's answers for them, computed once and kept on disk.

A view is a random crop (50-100 % of each side, or the whole image) and flip of an unlabelled
public slice (every calibration image of ``tools.modalities``: CT, nuclei, MR, ultrasound,
photographs, microscopy; the held-out files never), through the runtime's preprocessing, with
box prompts around its structures (Otsu components) and random boxes of every size down to
a few pixels, where int8 departs most from float.  The teacher (the float LiteMedSAM) gives
each view its embedding and each box its low-res logits; they are stored as float16 arrays
(``TeacherCache``), filled in order and resumable.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from qmedsam.image.preprocess import MODEL_SIZE, boxes_to_model, image_to_tensor
from tools.modalities import structure_boxes

BOXES_PER_VIEW = 4
DRAW = "modalities in turn"    # how views pick their images (a cache drawn otherwise is rebuilt)


def crop_and_flip(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    if rng.random() < 0.7 and min(h, w) >= 32:
        ch, cw = (int(round(s * rng.uniform(0.5, 1.0))) for s in (h, w))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        img = img[y:y + ch, x:x + cw]
    if rng.random() < 0.5:
        img = img[:, ::-1]
    if rng.random() < 0.5:
        img = img[::-1]
    return np.ascontiguousarray(img)


def random_box(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """One box inside the resized image (256-space), its sides 4-60 % of the image's (log-uniform)."""
    h, w = size
    side = np.exp(rng.uniform(np.log(0.04), np.log(0.6), 2)) * [w, h]
    x0, y0 = rng.uniform(0, w - side[0]), rng.uniform(0, h - side[1])
    return np.floor([x0, y0, x0 + side[0], y0 + side[1]]).astype(np.float32)


def view_source(seed: int, i: int, kinds: list[str]) -> tuple[int, np.random.Generator]:
    """Which image view ``i`` is cut from (``kinds``: each image's modality), and the generator
    that then makes the view.  The modalities take turns (view ``i`` comes from the ``i % K``-th
    of the K modalities, sorted), the image within one is drawn at random: drawn over images,
    three views in four were CT and photographs had 4 training views of 480 and one selection
    view, so a step could be chosen on one photograph's loss."""
    rng = np.random.default_rng([seed, i])
    order = sorted(set(kinds))
    members = [j for j, k in enumerate(kinds) if k == order[i % len(order)]]
    return members[int(rng.integers(len(members)))], rng


def make_view(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(model input (3, 256, 256) float32, boxes (BOXES_PER_VIEW, 1, 4) in 256-space)."""
    view = crop_and_flip(img, rng)
    x, geo = image_to_tensor(view)
    found = boxes_to_model(structure_boxes(view, max_boxes=BOXES_PER_VIEW // 2), geo)[:, 0]
    boxes = [*found, *(random_box(geo.resized, rng) for _ in range(BOXES_PER_VIEW - len(found)))]
    boxes = np.clip(np.stack(boxes), 0, MODEL_SIZE - 1).reshape(-1, 1, 4).astype(np.float32)
    return x[0], boxes


@dataclass
class TeacherCache:
    """Views and the teacher's outputs as float16 ``.npy`` memory maps in ``folder``."""

    folder: Path
    n: int

    def _arrays(self, mode: str):
        shapes = {"images": (self.n, 3, MODEL_SIZE, MODEL_SIZE), "boxes": (self.n, BOXES_PER_VIEW, 1, 4),
                  "embeddings": (self.n, 256, 64, 64), "logits": (self.n, BOXES_PER_VIEW, 1, MODEL_SIZE, MODEL_SIZE)}
        return {k: np.lib.format.open_memmap(self.folder / f"{k}.npy", mode=mode,
                                             dtype=np.float32 if k == "boxes" else np.float16, shape=s if mode == "w+" else None)
                for k, s in shapes.items()}

    def done(self, seed: int) -> int:
        """How many views an earlier run stored for this size and seed (0: none, or others)."""
        meta = self.folder / "meta.json"
        if not meta.is_file():
            return 0
        m = json.loads(meta.read_text())
        return m["done"] if (m["n"], m["seed"], m.get("draw")) == (self.n, seed, DRAW) else 0

    def build(self, images: list[np.ndarray], kinds: list[str], teacher, seed: int = 0, log=print) -> None:
        """Fill the cache from ``images`` of modalities ``kinds`` (resuming where an earlier run stopped)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        start = self.done(seed)
        if start >= self.n:
            return
        arrays = self._arrays("r+" if start else "w+")
        for i in range(start, self.n):
            source, rng = view_source(seed, i, kinds)
            x, boxes = make_view(images[source], rng)
            with torch.no_grad():
                emb = teacher.image_encoder(torch.from_numpy(x[None]))
                logits = teacher.decoder()(emb, torch.from_numpy(boxes))
            arrays["images"][i], arrays["boxes"][i] = x, boxes
            arrays["embeddings"][i], arrays["logits"][i] = emb[0].numpy(), logits.numpy()
            if (i + 1) % 25 == 0 or i + 1 == self.n:
                for a in arrays.values():
                    a.flush()
                (self.folder / "meta.json").write_text(json.dumps({"done": i + 1, "n": self.n, "seed": seed, "draw": DRAW}))
                log(f"teacher cache: {i + 1}/{self.n} views")

    def sources(self, seed: int, kinds: list[str]) -> list[int]:
        """The image each view was cut from (``build``'s draw, repeated: nothing is stored)."""
        return [view_source(seed, i, kinds)[0] for i in range(self.n)]

    def batch(self, ids) -> dict[str, torch.Tensor]:
        arrays = self._arrays("r")
        ids = np.sort(np.asarray(ids))
        return {k: torch.from_numpy(np.asarray(a[ids], dtype=np.float32)) for k, a in arrays.items()}
