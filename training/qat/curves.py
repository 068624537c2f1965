"""PNG of a stage's curves: training loss per step (and its parts), validation DSC/NSD per epoch."""
from __future__ import annotations

import json
from pathlib import Path


def plot_stage(stage_dir: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log = stage_dir / "log.jsonl"
    if not log.is_file():
        return None
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "step" in r]
    epochs = [r for r in rows if "val" in r]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
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
    fig.tight_layout()
    path = stage_dir / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
