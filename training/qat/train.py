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
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from qmedsam.cases.atomic import save_text

from training.data.dataset import Augment, SliceDataset
from training.data.index import build_index
from training.data.sampler import BalancedSampler, samples_per_modality
from training.qat.config import epochs_of, load_config, lr_factor
from training.qat.distributed import Run
from training.qat.stage import build_stage, collate
from training.qat.stage_files import export_record, previous_best, save_checkpoint, stage_dir
from training.qat.student import train_mode
from tools.weights import DEFAULT_PATH, ensure_weights


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
