"""``make qat-distill``: label-free quantization-aware distillation of the int8 image encoder.

The paper's stage 1 with the float LiteMedSAM as its teacher, so no labels are needed: the
student starts from the post-training recipe (``training.ptq_recipe``: merged BatchNorms,
per-channel weights, activation equalization, calibrated activation scales, bias
correction) and learns, through its fake-quantized forward pass, to give the teacher's
embeddings and, through the frozen float decoder, the teacher's masks, on unlabelled views of
public images of every modality (``training.qat.distill_data``, teacher outputs cached once).
Every ``--eval-every`` steps the student is measured twice: on the selection views (cached views
of the same images that it never trains on), whose distillation loss chooses the best step, and
on the held-out files (``tools.modalities.held_out_sets``, which calibration never sees), whose
mask agreement with the float model is only reported, so the reported agreement is not the
figure the step was chosen on.

Resumable: rerun the same command and it continues from ``OUT/last.pt``.  Writes
``OUT/log.jsonl``, ``OUT/best.pt`` (``make export CKPT=OUT/best.pt``), ``OUT/curves.png``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from qmedsam.cases.atomic import replacing
from tools.weights import DEFAULT_PATH, ensure_weights, sha256_of
from training.qat.checkpoint import Structure, rebuild, student_record
from training.qat.distill_data import TeacherCache

TRAINABLE = ("scales", "scales+biases", "all")


def is_scale(name: str) -> bool:
    """Quantizer scales and the equalization's scale nodes."""
    return "scaling_impl" in name or name.endswith(".scale.weight")


def select_parameters(encoder: torch.nn.Module, which: str) -> tuple[list, list]:
    """(weights and biases, scales) that train under ``which``; everything else is frozen."""
    if which not in TRAINABLE:
        raise ValueError(f"trainable {which!r} not in {TRAINABLE}")
    plain, scales = [], []
    for name, p in encoder.named_parameters():
        keep = is_scale(name) or which == "all" or (which == "scales+biases" and name.endswith(".bias"))
        p.requires_grad_(keep)
        if keep:
            (scales if is_scale(name) else plain).append(p)
    return plain, scales


def embedding_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Squared error relative to the teacher's energy, per view."""
    dims = tuple(range(1, student.dim()))
    return (((student - teacher) ** 2).mean(dims) / (teacher ** 2).mean(dims).clamp_min(1e-12)).mean()


def mask_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL divergence from the teacher's per-pixel probabilities plus soft Dice against its mask.
    (Cross-entropy less the teacher's own entropy: the same gradient, but 0 at the teacher, so
    the logged loss shows what is left to learn.)"""
    p_t = torch.sigmoid(teacher_logits)
    entropy = F.binary_cross_entropy_with_logits(teacher_logits, p_t)
    bce = F.binary_cross_entropy_with_logits(student_logits, p_t) - entropy
    p, t = torch.sigmoid(student_logits).flatten(1), (teacher_logits > 0).float().flatten(1)
    dice = 1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)
    return bce + dice.mean()


def lr_factor(step: int, steps: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1)))


def ptq_student(weights: Path, n_calib: int, weight_bits: int = 8, log=print):
    """The post-training recipe's int8 model (steps 1-4, bias correction on) as the student."""
    from tools.modalities import calibration_set
    from training.ptq import model_inputs, correct_bias
    from training.ptq_recipe import BIAS_SLICES, quantized_model

    images = model_inputs(calibration_set(n_calib))
    log(f"student: post-training recipe on {len(images)} calibration slices, {weight_bits}-bit weights")
    model = quantized_model(weights, images, weight_bits=weight_bits)
    correct_bias(model.image_encoder, [(x,) for x in images[:BIAS_SLICES]])
    return model.eval()


class Agreement:
    """The held-out agreement of an encoder with the float model (per modality, mask Dice)."""

    def __init__(self, fmodel, pairs: dict | None = None):
        from tools.modalities import held_out_sets
        from training.ptq import make_eval_set

        self.fdec = fmodel.decoder()
        self.sets = {m: make_eval_set(fmodel, p) for m, p in (pairs or held_out_sets()).items()}

    def __call__(self, encoder) -> dict:
        from training.ptq import agreement_by_modality

        encoder.eval()
        return agreement_by_modality(encoder, self.fdec, self.sets)


@torch.no_grad()
def view_agreement(encoder, fdec, data: dict, mask_weight: float, modalities: list[str] | None = None) -> dict:
    """On cached views (the selection views): the distillation loss (what chooses the best step),
    the same loss per modality (``modalities``: each view's), its embedding part, and the
    student's mask Dice against the teacher's masks (mean per box: the many small random boxes
    make it noisy, so it is reported, not used)."""
    from training.ptq import mask_dice

    encoder.eval()
    dices, e_losses, m_losses = [], [], []
    for i in range(len(data["images"])):
        emb = encoder(data["images"][i:i + 1])
        logits = fdec(emb, data["boxes"][i])
        e_losses.append(float(embedding_loss(emb, data["embeddings"][i:i + 1])))
        m_losses.append(float(mask_loss(logits, data["logits"][i])))
        dices.append(mask_dice(logits > 0, data["logits"][i] > 0))
    per_view = np.asarray(e_losses) + mask_weight * np.asarray(m_losses)
    out = {"loss": round(float(per_view.mean()), 5),
           "embedding_error": round(float(np.mean(e_losses)), 5),
           "mask_dice": round(float(torch.cat(dices).mean()), 4)}
    if modalities is not None:
        kinds = np.asarray(modalities)
        out["by_modality"] = {m: round(float(per_view[kinds == m].mean()), 5) for m in sorted(set(modalities))}
    return out


def worse_modalities(row: dict, start: dict) -> list[str]:
    """The modalities whose selection loss at ``row`` is above their loss at ``start``."""
    now, first = row["selection"].get("by_modality", {}), start["selection"].get("by_modality", {})
    return [m for m, v in now.items() if m in first and v > first[m]]


def is_better(row: dict, best: dict, start: dict) -> bool:
    """A step is kept when its selection loss is the lowest so far and no modality's selection
    loss is worse than at the start: two runs chosen on the mean alone traded the CT volumes
    (1.6-2.2 DSC points against ground truth) for MR."""
    return row["selection"]["loss"] < best["selection"]["loss"] and not worse_modalities(row, start)


def save(blob: dict, path: Path) -> None:
    with replacing(path) as tmp:
        torch.save(blob, tmp)


@dataclass(frozen=True)
class Settings:
    steps: int = 120
    views: int = 480              # cached unlabelled views to train on
    val_views: int = 48           # more views of the same images, never trained on: they choose the best step
    batch: int = 2
    accum: int = 4                # batches per optimizer step (steadier steps: 2 views gave +-0.7 points a step)
    lr: float = 2e-5              # Adam, weights and biases
    scale_lr: float = 5e-5        # Adam, quantizer and equalization scales
    trainable: str = "scales"     # measured: weights or biases trained too lowered the held-out agreement
    mask_weight: float = 1.0
    eval_every: int = 50
    calib: int = 48               # calibration slices of the post-training starting point
    weight_bits: int = 8          # 7: the student of encoder_w7 (CPUs without VNNI; qmedsam.precision.setting)
    seed: int = 0


def distill(out: Path, s: Settings, weights: Path | None = None, held_out: dict | None = None,
            log=print) -> dict:
    """Run (or resume) the distillation; returns the best record.  ``held_out``: (image, boxes)
    pairs per modality to measure agreement on (default ``tools.modalities.held_out_sets``)."""
    from training.model.lite_medsam import build_lite_medsam
    from training.qat.student import keep_batchnorm_statistics

    torch.manual_seed(s.seed)
    weights = ensure_weights(weights or DEFAULT_PATH)
    out.mkdir(parents=True, exist_ok=True)
    settings = asdict(s)
    steps, views, batch, seed = s.steps, s.views, s.batch, s.seed
    fmodel = build_lite_medsam(weights)
    cache = TeacherCache(out / "teacher-cache", views + s.val_views)
    from tools.modalities import calibration_entries

    entries = calibration_entries(10 ** 6)
    kinds = [kind for kind, _, _ in entries]
    if cache.done(seed) < cache.n:
        cache.build([img for _, _, img in entries], kinds, fmodel, seed, log)
    view_kinds = [kinds[j] for j in cache.sources(seed, kinds)]
    last, init = out / "last.pt", out / "init.pt"
    if last.is_file():
        blob = torch.load(str(last), map_location="cpu", weights_only=False)
        log(f"resuming at step {blob['step']} from {last}")
    elif init.is_file():
        blob = torch.load(str(init), map_location="cpu", weights_only=False)
    else:
        from training.ptq_recipe import kept_float

        model = ptq_student(weights, s.calib, s.weight_bits, log)
        blob = student_record(model, Structure(equalized=True, float_layers=tuple(kept_float(model)),
                                               weight_bits=s.weight_bits), step=0)
        save(blob, init)
    model, structure = rebuild(blob)
    encoder = model.image_encoder
    plain, scales = select_parameters(encoder, s.trainable)
    groups = [g for g in ({"params": plain, "lr": s.lr}, {"params": scales, "lr": s.scale_lr})
              if g["params"]]
    opt = torch.optim.Adam(groups)
    base = [g["lr"] for g in opt.param_groups]
    if "optimizer" in blob:
        opt.load_state_dict(blob["optimizer"])
    start, history = blob.get("step", 0), blob.get("history", [])
    best = blob.get("best")
    agreement = Agreement(fmodel, held_out)
    fdec = fmodel.decoder()
    fdec.requires_grad_(False)
    selection = cache.batch(np.arange(views, cache.n))
    selection_kinds = view_kinds[views:]
    logf = open(out / "log.jsonl", "a")

    def evaluate(step: int) -> dict:
        row = {"step": step, "selection": view_agreement(encoder, fdec, selection, s.mask_weight, selection_kinds),
               "held_out": agreement(encoder)}
        history.append(row)
        logf.write(json.dumps(row) + "\n")
        logf.flush()
        return row

    if best is None:
        best = evaluate(0)
        log(f"step 0: selection loss {best['selection']['loss']:.5f} ({_by_modality(best)}); "
            f"held-out {_summary(best['held_out'])}")
    rng = np.random.default_rng([seed, start])
    warmup = max(1, steps // 20)
    t0 = time.time()
    for step in range(start, steps):
        for g, b in zip(opt.param_groups, base):
            g["lr"] = b * lr_factor(step, steps, warmup)
        encoder.train()
        keep_batchnorm_statistics(encoder)
        opt.zero_grad(set_to_none=True)
        parts = np.zeros(2)
        for ids in rng.choice(views, size=(s.accum, batch), replace=False):
            parts += _backward(encoder, fdec, cache.batch(ids), s) / s.accum
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        opt.step()
        loss = parts[0] + s.mask_weight * parts[1]
        row = {"step": step + 1, "loss": loss, "embedding": parts[0], "mask": parts[1],
               "lr": opt.param_groups[0]["lr"], "seconds": round(time.time() - t0, 1)}
        logf.write(json.dumps(row) + "\n")
        logf.flush()
        if (step + 1) % 10 == 0:
            rate = (time.time() - t0) / (step + 1 - start)
            log(f"step {step + 1}/{steps}: loss {row['loss']:.4f} (embedding {row['embedding']:.4f}, "
                f"mask {row['mask']:.4f}), {rate:.1f} s/step, {rate * (steps - step - 1) / 60:.0f} min left")
        if (step + 1) % s.eval_every == 0 or step + 1 == steps:
            row = evaluate(step + 1)
            improved = is_better(row, best, history[0])
            worse = worse_modalities(row, history[0])
            log(f"step {step + 1}: selection loss {row['selection']['loss']:.5f} ({_by_modality(row)})"
                f"{' (best)' if improved else ''}{'; worse than the start: ' + ', '.join(worse) if worse else ''}"
                f"; held-out {_summary(row['held_out'])}")
            if improved:
                best = row
            record = _distillation_record(settings, history, best, weights)
            if improved:
                save(student_record(model, structure, distillation=record), out / "best.pt")
            save(student_record(model, structure, distillation=record, step=step + 1, history=history,
                                best=best, optimizer=opt.state_dict()), last)
    logf.close()
    if not (out / "best.pt").is_file():          # nothing beat the starting point: keep it
        start_point = torch.load(str(init), map_location="cpu", weights_only=False)
        save(student_record(rebuild(start_point)[0], structure,
                            distillation=_distillation_record(settings, history, best, weights)), out / "best.pt")
    from training.qat.curves import plot_distillation

    plot_distillation(out)
    return best


def _backward(encoder, fdec, data: dict, s: Settings) -> np.ndarray:
    """Forward and backward of one batch (gradients scaled for ``s.accum`` batches a step);
    returns its (embedding loss, mask loss)."""
    emb = encoder(data["images"])
    e_loss = embedding_loss(emb, data["embeddings"])
    m_loss = torch.zeros(())
    if s.mask_weight > 0:
        logits = torch.cat([fdec(emb[i:i + 1], data["boxes"][i]) for i in range(len(emb))])
        m_loss = mask_loss(logits, data["logits"].flatten(0, 1))
    ((e_loss + s.mask_weight * m_loss) / s.accum).backward()
    return np.array([e_loss.item(), m_loss.item()])


def _summary(scores: dict) -> str:
    return " ".join(f"{m} {r['mask_dice']:.4f}" for m, r in scores.items())


def _by_modality(row: dict) -> str:
    return " ".join(f"{m} {v:.4f}" for m, v in row["selection"].get("by_modality", {}).items())


def logged_seconds(log: Path) -> float | None:
    """Training seconds a run's ``log.jsonl`` records, over all its resumes (each restarts the
    clock of its step rows); None where there is no log or no step in it."""
    if not log.is_file():
        return None
    total, last = 0.0, 0.0
    for line in log.read_text().splitlines():
        row = json.loads(line)
        if "seconds" in row:
            if row["seconds"] < last:               # a resume: the previous run's clock ends at ``last``
                total += last
            last = row["seconds"]
    return round(total + last, 1) if last else None


def _distillation_record(settings, history, best, weights) -> dict:
    return {"method": "label-free quantization-aware distillation of the image encoder (make qat-distill): "
                      "student from the post-training recipe, float LiteMedSAM teacher, relative embedding "
                      "MSE + mask KL/Dice through the frozen float decoder, unlabelled public views; "
                      "best step chosen by the distillation loss on selection views never trained on, "
                      "no modality's selection loss above its start, "
                      "held-out files only reported",
            "settings": settings, "teacher": {"path": weights.name, "sha256": sha256_of(weights)},
            "best_step": best["step"], "selection_before": history[0]["selection"],
            "selection_best": best["selection"], "held_out_before": history[0]["held_out"],
            "held_out_best": best["held_out"],
            "history": [{"step": h["step"], "selection": h["selection"],
                         "held_out_mean_mask_dice": h["held_out"]["mean"]["mask_dice"]} for h in history]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("out/qat-distill"))
    for f in fields(Settings):
        ap.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default,
                        **({"choices": TRAINABLE} if f.name == "trainable" else {}))
    ap.add_argument("--weights", type=Path, default=None)
    args = ap.parse_args(argv)
    settings = Settings(**{f.name: getattr(args, f.name) for f in fields(Settings)})
    best = distill(args.out, settings, args.weights, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"best step {best['step']}: selection loss {best['selection']['loss']:.5f}; "
          f"held-out {_summary(best['held_out'])} -> {args.out / 'best.pt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
