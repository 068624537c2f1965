"""One QAT stage's training state, its loss and its optimiser step."""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from training.model.lite_medsam import load_state
from training.qat.losses import distillation_loss, mask_iou, segmentation_loss
from training.qat.student import StudentStep, Teacher, build_student, freeze_for_stage, train_mode


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
