"""PNGs of training runs: a QAT stage (loss per step and its parts, validation DSC/NSD per epoch) and
a distillation run (losses, held-out agreement per modality)."""
from __future__ import annotations

import json
from pathlib import Path


def plot_stage(stage_dir: Path) -> Path | None:
    run = _open(stage_dir / "log.jsonl")
    if run is None:
        return None
    rows, fig, (a, b) = run
    steps = [r for r in rows if "step" in r]
    epochs = [r for r in rows if "val" in r]
    if steps:
        x = list(range(1, len(steps) + 1))
        a.plot(x, [r["loss"] for r in steps], label="total", lw=1)
        a.plot(x, [r["seg"] for r in steps], label="Dice + focal", lw=1)
        if any(r["distill"] for r in steps):
            a.plot(x, [r["distill"] for r in steps], label="distillation", lw=1)
        a.set_xlabel("step")
        a.set_yscale("log")
        a.legend(fontsize=7)
        a.set_title(f"{stage_dir.name}: training loss")
    if epochs:
        e = [r["epoch"] + 1 for r in epochs]
        b.plot(e, [r["val"]["mean"]["dsc"] for r in epochs], "o-", label="DSC")
        b.plot(e, [r["val"]["mean"]["nsd"] for r in epochs], "s-", label="NSD")
        b.set_xlabel("epoch")
        b.set_ylim(0, 1)
        b.legend(fontsize=7)
        b.set_title("validation (mean over modalities)")
    return _save(fig, stage_dir / "curves.png")


def plot_distillation(out: Path) -> Path | None:
    """``make qat-distill``'s curves: its losses per step and the held-out agreement per modality."""
    run = _open(out / "log.jsonl")
    if run is None:
        return None
    rows, fig, (a, b) = run
    steps = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "held_out" in r]
    if steps:
        x = [r["step"] for r in steps]
        for key in ("loss", "embedding", "mask"):
            a.plot(x, [r[key] for r in steps], label=key, lw=0.8)
        a.set_yscale("log")
        a.set_xlabel("step")
        a.legend(fontsize=7)
        a.set_title("distillation loss")
    if evals:
        x = [r["step"] for r in evals]
        for m in evals[-1]["held_out"]:
            b.plot(x, [r["held_out"][m]["mask_dice"] for r in evals], "o-",
                   label=f"held-out {m}" if m == "mean" else m, lw=2 if m == "mean" else 1, ms=3)
        chosen = [(r["step"], r["selection"]["loss"]) for r in evals if "loss" in r.get("selection", {})]
        if chosen:
            a.plot(*zip(*chosen), "s--", color="black", lw=1.5, ms=4, label="selection views (chooses best)")
            a.legend(fontsize=7)
        b.set_xlabel("step")
        b.set_ylabel("mask Dice vs float")
        b.legend(fontsize=7)
        b.set_title("held-out agreement with the float model")
    return _save(fig, out / "curves.png")


def _open(log: Path):
    """(log rows, figure, its two axes) for a run's ``log.jsonl``, or None without one."""
    if not log.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()], fig, axes


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
