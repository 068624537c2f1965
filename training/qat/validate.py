"""Validation after every epoch: DSC/NSD per modality on the held-out cases (the evaluation metrics).

Up to ``val_samples_per_modality`` labelled slices per modality, one label each
(chosen by seed), tight box; the mask goes back to the original resolution
through the runtime's post-processing and is scored with :mod:`qmedsam_eval.metrics`
as the organisers score a 2D case (one-slice volume, spacing 1; NSD 0 where DSC <= 0.2).
"""
from __future__ import annotations

import numpy as np
import torch

from qmedsam_eval.metrics import label_scores
from qmedsam.image.preprocess import boxes_to_model, image_to_tensor, logits_to_mask
from training.data.dataset import SliceDataset


def validation_samples(index, val_ids, per_modality: int, seed: int) -> dict[str, np.ndarray]:
    by_mod: dict[str, list[int]] = {}
    for i in val_ids:
        by_mod.setdefault(index.entries[i].modality, []).append(i)
    rng = np.random.default_rng([seed, 7])
    return {m: np.sort(rng.permutation(index.samples_of(ids))[:per_modality]) for m, ids in by_mod.items()}


@torch.no_grad()
def validate(model, index, val_ids, cfg, device) -> dict:
    picks = validation_samples(index, val_ids, cfg["sampling"]["val_samples_per_modality"], cfg["seed"])
    ds = SliceDataset(index)
    was_training = model.training
    model.eval()
    out = {}
    for modality, samples in picks.items():
        dscs, nsds = [], []
        for g in samples:
            image, labels, _, _ = ds.raw(int(g))
            present = np.unique(labels)
            present = present[present != 0]
            mask = labels == np.random.default_rng([cfg["seed"], int(g)]).choice(present)
            ys, xs = np.nonzero(mask)
            x, geo = image_to_tensor(image)
            box = boxes_to_model(np.array([[xs.min(), ys.min(), xs.max(), ys.max()]]), geo)
            emb = model.image_encoder(torch.from_numpy(x).to(device))
            logits = model.decoder()(emb, torch.from_numpy(box).to(device))[0, 0].float().cpu().numpy()
            score = label_scores(mask.astype(np.uint8), logits_to_mask(logits, geo).astype(np.uint8))[0]
            dscs.append(score.dsc)
            nsds.append(score.nsd)
        out[modality] = {"dsc": float(np.mean(dscs)), "nsd": float(np.mean(nsds)), "n": len(samples)}
    mods = [v for v in out.values()]
    out["mean"] = {"dsc": float(np.mean([v["dsc"] for v in mods])) if mods else 0.0,
                   "nsd": float(np.mean([v["nsd"] for v in mods])) if mods else 0.0}
    model.train(was_training)
    return out
