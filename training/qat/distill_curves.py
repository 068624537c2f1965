"""PNG of a distillation run: its losses per step and the held-out agreement per modality."""
from __future__ import annotations

import json
from pathlib import Path


def plot(out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log = out / "log.jsonl"
    if not log.is_file():
        return None
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "held_out" in r]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    if steps:
        x = [r["step"] for r in steps]
        for key in ("loss", "embedding", "mask"):
            a.plot(x, [r[key] for r in steps], label=key, lw=0.8)
        a.set_yscale("log")
        a.set_xlabel("step")
        a.legend(fontsize=7)
        a.set_title("distillation loss")
    if evals:
        for m in evals[-1]["held_out"]:
            b.plot([r["step"] for r in evals], [r["held_out"][m]["mask_dice"] for r in evals], "o-",
                   label=m, lw=2 if m == "mean" else 1, ms=3)
        b.set_xlabel("step")
        b.set_ylabel("mask Dice vs float")
        b.legend(fontsize=7)
        b.set_title("held-out agreement with the float model")
    fig.tight_layout()
    path = out / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
