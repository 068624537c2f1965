"""One QAT stage: ``python -m training.qat.train --stage N --data DIR --out DIR`` (or under ``torchrun``).

Per epoch: modality-balanced samples (each rank its share), SGD with linear
warm-up then cosine annealing (per step), Dice + focal loss (+ IoU-weighted
embedding distillation in stages 1 and 3), then a checkpoint, validation DSC/NSD
per modality, and the best epoch kept as ``best.pt`` (stage N+1 starts from
stage N's ``best.pt``).  An interrupted stage resumes from ``last.pt``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from qmedsam.atomic import replacing, save_text

from training.data.dataset import Augment, SliceDataset
from training.data.index import build_index
from training.data.sampler import BalancedSampler, samples_per_modality
from training.model.lite_medsam import load_state
from training.qat.checkpoint import Structure, student_record
from training.qat.losses import distillation_loss, mask_iou, segmentation_loss
from training.qat.student import (QAT_CONFIG, StudentStep, Teacher, build_student,
                                  freeze_for_stage, train_mode)
from tools.weights import DEFAULT_PATH, ensure_weights

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def load_config(stage: int, path: Path | None = None, epochs: int | None = None,
                samples: int | str | None = None) -> dict:
    cfg = json.loads((path or CONFIGS / f"stage{stage}.json").read_text())
    if epochs is not None:          # short runs: keep the warm-up/cosine shape, scaled down
        warm = epochs // 3 if epochs >= 3 else 0
        cfg["schedule"].update(warmup_epochs=warm, cosine_epochs=epochs - warm)
    if samples is not None:
        cfg["sampling"]["per_modality"] = samples
    return cfg


def lr_factor(step: int, steps_per_epoch: int, sched: dict) -> float:
    """Linear warm-up from warmup_start_fraction, then cosine down to final_fraction (per step)."""
    e = step / max(steps_per_epoch, 1)
    warm, cos = sched["warmup_epochs"], sched["cosine_epochs"]
    if e < warm:
        s0 = sched["warmup_start_fraction"]
        return s0 + (1 - s0) * e / warm
    t = min((e - warm) / max(cos, 1e-9), 1.0)
    f = sched["final_fraction"]
    return f + (1 - f) * 0.5 * (1 + math.cos(math.pi * t))


def epochs_of(cfg) -> int:
    return int(cfg["schedule"]["warmup_epochs"] + cfg["schedule"]["cosine_epochs"])


class Run:
    """Distributed context: rank, world size, device; rank 0 does the writing."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = torch.cuda.is_available()
        self.device = torch.device(f"cuda:{local}" if cuda else "cpu")
        if cuda:
            torch.cuda.set_device(self.device)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.world > 1:
            dist.barrier()


def collate(items):
    return {"image": torch.stack([i["image"] for i in items]), "box": torch.stack([i["box"] for i in items]),
            "mask": torch.stack([i["mask"] for i in items]),
            "modality": torch.tensor([i["modality"] for i in items])}


def compute_loss(step_module, teacher, batch, cfg, device):
    images, boxes, masks = (batch[k].to(device) for k in ("image", "box", "mask"))
    emb, logits = step_module(images, boxes)
    lc = cfg["loss"]
    seg = segmentation_loss(logits, masks, lc["dice_weight"], lc["mask_weight"], lc["mask_loss"])
    distill = torch.zeros((), device=device)
    if lc["distill_weight"] > 0 and teacher is not None:
        t_emb, t_logits = teacher(images, boxes)
        distill = distillation_loss(emb, t_emb, mask_iou(t_logits, masks))
    return seg + lc["distill_weight"] * distill, seg.detach(), distill.detach()


def reachable(step_module, params, batch, cfg, device) -> list:
    """The trainable parameters the loss reaches; the others (the multimask hypernetworks and the
    IoU head under a single-mask loss, the prompt encoder's point and mask embeddings under box
    prompts) are frozen: they would never change, and DDP's gradient buckets must only hold
    parameters that receive a gradient every step."""
    loss = compute_loss(step_module, None, batch, dict(cfg, loss=dict(cfg["loss"], distill_weight=0.0)), device)[0]
    loss.backward()
    keep = [p for p in params if p.grad is not None]
    for p in params:
        if p.grad is None:
            p.requires_grad_(False)
        p.grad = None
    return keep


def optimise(loss, params, optim, clip: float | None) -> None:
    """One optimiser step: backward, optional gradient-norm clipping, step."""
    optim.zero_grad(set_to_none=True)
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(params, clip)
    optim.step()


@torch.no_grad()
def calibrate(model, stage: int, loader, batches: int, device) -> None:
    """Initialise the trained part's quantizer scales from a few training batches."""
    from brevitas.graph.calibrate import calibration_mode

    part = model.image_encoder if stage == 1 else model.mask_decoder
    model.eval()
    with calibration_mode(part):
        for i, batch in enumerate(loader):
            if i >= batches:
                break
            emb = model.image_encoder(batch["image"].to(device))
            model.decoder()(emb, batch["box"].to(device))


def stage_dir(out: Path, stage: int) -> Path:
    return out / f"stage{stage}"


def previous_best(out: Path, stage: int) -> dict | None:
    if stage == 1:
        return None
    path = stage_dir(out, stage - 1) / "best.pt"
    if not path.is_file():
        raise FileNotFoundError(f"stage {stage} starts from {path}; run stage {stage - 1} first")
    return torch.load(str(path), map_location="cpu", weights_only=False)["model"]


def export_record(model, float_layers, cfg, history, best) -> dict:
    """A stage checkpoint: the student's state and structure (``training.qat.checkpoint``) and the
    stage's history; ``make export CKPT=`` reads any of them."""
    structure = Structure(weight_per_channel=QAT_CONFIG.weight_per_channel,
                          range_aware_inputs=QAT_CONFIG.range_aware_inputs, merged_batchnorms=True,
                          float_layers=tuple(float_layers))
    return student_record(model, structure, stages={"stage": cfg["stage"], "config": cfg, "best": best,
                                                    "history": history})


@dataclass
class Stage:
    """One stage's training state: the student, what it trains, its teacher and optimiser."""

    stage: int
    model: torch.nn.Module
    float_layers: list[str]
    params: list
    step_module: torch.nn.Module        # StudentStep, DDP-wrapped when distributed
    teacher: Teacher | None
    optim: torch.optim.Optimizer
    cfg: dict
    device: torch.device

    def loss(self, batch):
        """(total, segmentation, distillation) loss of a batch, under bf16 autocast on CUDA when asked."""
        amp = (torch.autocast("cuda", dtype=torch.bfloat16)
               if self.cfg.get("amp") and self.device.type == "cuda" else nullcontext())
        with amp:
            return compute_loss(self.step_module, self.teacher, batch, self.cfg, self.device)

    def update(self, loss) -> None:
        optimise(loss, self.params, self.optim, self.cfg["optimizer"].get("clip_grad_norm"))

    def step(self, batch):
        """One training step on a batch; returns its (total, segmentation, distillation) loss."""
        loss, seg, distill = self.loss(batch)
        self.update(loss)
        return loss.detach(), seg, distill


def build_stage(stage: int, weights: Path, cfg: dict, device, init: dict | None = None,
                resume: dict | None = None, calibration=(), probe=None, distributed: bool = False) -> Stage:
    """Build a stage as ``train_stage`` runs it: the student (from ``init``, the previous stage's best
    state), its quantizer scales (loaded from ``resume``, else calibrated on the first
    ``calibration_batches`` of ``calibration``), the frozen parts, the parameters ``probe`` shows
    the loss reaches, the teacher and the optimiser."""
    model, float_layers = build_student(weights, cfg["quant"]["float_groups"], stage, init)
    model = model.to(device)
    teacher = None
    if cfg["loss"]["distill_weight"] > 0:
        tck = cfg.get("teacher_checkpoint")
        teacher = Teacher(weights, Path(tck) if tck else None).to(device)
    if resume is not None:     # before any forward pass: quantizers must not re-collect statistics
        load_state(model, resume)
    elif stage in (1, 2) and cfg["quant"]["calibration_batches"]:
        calibrate(model, stage, calibration, cfg["quant"]["calibration_batches"], device)
    params = freeze_for_stage(model, stage)
    train_mode(model, stage)
    params = reachable(StudentStep(model), params, probe, cfg, device)
    step_module = StudentStep(model)
    if distributed:
        step_module = torch.nn.parallel.DistributedDataParallel(
            step_module, device_ids=[device.index] if device.type == "cuda" else None)
    oc = cfg["optimizer"]
    optim = torch.optim.SGD(params, lr=oc["lr"], momentum=oc["momentum"], weight_decay=oc["weight_decay"])
    return Stage(stage, model, float_layers, params, step_module, teacher, optim, cfg, device)


def save_checkpoint(blob: dict, path: Path) -> None:
    with replacing(path) as tmp:
        torch.save(blob, tmp)


def train_stage(stage: int, data: Path, out: Path, cfg: dict, weights: Path | None = None,
                stop_after: int | None = None, progress: bool = True) -> dict:
    """Run (or resume) one stage; returns the best-epoch record."""
    from training.qat.validate import validate

    run = Run()
    torch.manual_seed(cfg["seed"])
    weights = ensure_weights(weights or DEFAULT_PATH)
    sdir = stage_dir(out, stage)
    if run.main:
        sdir.mkdir(parents=True, exist_ok=True)
    run.barrier()
    index = build_index(data, progress=progress and run.main)
    train_ids, val_ids = index.split(cfg["sampling"]["val_fraction"], cfg["seed"])
    groups = {}
    for i in train_ids:
        groups.setdefault(index.entries[i].modality, []).append(i)
    groups = {m: index.samples_of(ids) for m, ids in groups.items()}
    counts = samples_per_modality({m: len(v) for m, v in groups.items()}, cfg["sampling"]["per_modality"])
    sampler = BalancedSampler(groups, counts, cfg["seed"], run.rank, run.world)
    aug = cfg["augment"]
    dataset = SliceDataset(index, Augment(aug["jitter"], aug["flip"]), seed=cfg["seed"])
    workers = cfg["workers"] if cfg["workers"] and sys.platform != "win32" else 0
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg["batch_size"], sampler=sampler,
                                         num_workers=workers, collate_fn=collate, drop_last=True,
                                         persistent_workers=False)
    last = sdir / "last.pt"
    start_epoch, history, best = 0, [], None
    resume = torch.load(str(last), map_location="cpu", weights_only=False) if last.is_file() else None
    sampler.set_epoch(10**6 + 1)               # draws of their own, not an epoch's
    probe = next(iter(loader))
    sampler.set_epoch(10**6)
    st = build_stage(stage, weights, cfg, run.device, init=previous_best(out, stage),
                     resume=resume["model"] if resume is not None else None, calibration=loader,
                     probe=probe, distributed=run.world > 1)
    model, float_layers, optim = st.model, st.float_layers, st.optim
    steps_per_epoch = max(len(sampler) // cfg["batch_size"], 1)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: lr_factor(s, steps_per_epoch, cfg["schedule"]))
    if resume is not None:
        optim.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        start_epoch, history, best = resume["epoch"] + 1, resume["history"], resume["best"]
        if run.main:
            print(f"stage {stage}: resuming at epoch {start_epoch} from {last}", file=sys.stderr)
    log = open(sdir / "log.jsonl", "a") if run.main else None
    total = epochs_of(cfg)
    for epoch in range(start_epoch, total):
        if stop_after is not None and epoch >= stop_after:
            break
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        train_mode(model, stage)
        it = loader
        if progress and run.main:
            from tqdm import tqdm

            it = tqdm(loader, total=steps_per_epoch, desc=f"stage {stage} epoch {epoch + 1}/{total}",
                      file=sys.stderr)
        losses = []
        t0 = time.time()
        for batch in it:
            loss, seg, distill = st.step(batch)
            sched.step()
            losses.append(float(loss.detach()))
            if log:
                log.write(json.dumps({"epoch": epoch, "step": sched.last_epoch, "loss": losses[-1],
                                      "seg": float(seg), "distill": float(distill),
                                      "lr": optim.param_groups[0]["lr"]}) + "\n")
                log.flush()
            if progress and run.main:
                it.set_postfix(loss=f"{losses[-1]:.4f}")
        if run.main:
            scores = validate(model, index, val_ids, cfg, run.device)
            record = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else None,
                      "seconds": round(time.time() - t0, 1), "val": scores,
                      "score": scores["mean"]["dsc"] + scores["mean"]["nsd"]}
            history.append(record)
            log.write(json.dumps(record) + "\n")
            log.flush()
            save_checkpoint(export_record(model, float_layers, cfg, history, best), sdir / f"epoch{epoch + 1:03d}.pt")
            if best is None or record["score"] >= best["score"]:
                best = {"epoch": epoch, "score": record["score"], "val": scores}
                save_checkpoint(export_record(model, float_layers, cfg, history, best), sdir / "best.pt")
            save_checkpoint(dict(export_record(model, float_layers, cfg, history, best),
                                 optimizer=optim.state_dict(), scheduler=sched.state_dict(), epoch=epoch,
                                 history=history, best=best), last)
            save_text(sdir / "best.json", json.dumps(best, indent=2) + "\n")
        run.barrier()
    if run.main:
        from training.qat.curves import plot_stage

        plot_stage(sdir)
        if log:
            log.close()
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", type=int, choices=(1, 2, 3), required=True)
    ap.add_argument("--data", type=Path, required=True, help="training tree of .npz cases")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--config", type=Path, help="default: training/configs/stageN.json")
    ap.add_argument("--epochs", type=int, help="override warm-up + cosine epochs (short runs)")
    ap.add_argument("--samples", help="override samples per modality per epoch (number, min, tenth)")
    ap.add_argument("--lr", type=float, help="override the base learning rate")
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--teacher", type=Path, help="MedSAM ViT-B checkpoint as the distillation teacher")
    ap.add_argument("--stop-after", type=int, help="stop after this many epochs (resume later)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    samples = int(args.samples) if args.samples and args.samples.isdigit() else args.samples
    cfg = load_config(args.stage, args.config, args.epochs, samples)
    if args.teacher:
        cfg["teacher_checkpoint"] = str(args.teacher)
    if args.lr:
        cfg["optimizer"]["lr"] = args.lr
    best = train_stage(args.stage, args.data, args.out, cfg, args.weights, args.stop_after,
                       progress=not args.no_progress)
    if Run().main and best is not None:
        print(f"stage {args.stage}: best epoch {best['epoch'] + 1}, DSC {best['val']['mean']['dsc']:.4f}, "
              f"NSD {best['val']['mean']['nsd']:.4f} -> {stage_dir(args.out, args.stage) / 'best.pt'}")
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
