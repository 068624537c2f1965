"""``make bench-int8``'s figure: per labelled case, each int8 row's DSC against FP32's, one panel
per CPU setting, so a case that int8 moves (and a setting that moves it) shows at a glance."""
from __future__ import annotations

from pathlib import Path


def draw(results: dict, path: Path, cpu: str) -> Path:
    """One panel per setting: DSC points vs FP32 (x) for each case (y), a marker per int8 row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(results)
    cases = list(next(iter(results.values()))["labelled"])
    rows = []
    for r in results.values():
        for row in r["labelled"].values():
            rows += [k for k in row if k != "fp32" and k not in rows]
    markers = "os^vDP*Xh<>"
    fig, axes = plt.subplots(1, len(settings), figsize=(4.2 * len(settings) + 1.5, 0.45 * len(cases) + 1.6),
                             sharex=True, sharey=True, squeeze=False)
    for ax, setting in zip(axes[0], settings):
        labelled = results[setting]["labelled"]
        for j, k in enumerate(rows):
            pts = [(100 * (labelled[c][k][0] - labelled[c]["fp32"][0]), i + (j - len(rows) / 2) * 0.06)
                   for i, c in enumerate(cases) if k in labelled[c]]
            if pts:
                ax.scatter(*zip(*pts), marker=markers[j % len(markers)], s=22, label=k)
        ax.axvline(0, color="grey", lw=0.8)
        for x in (-2, -0.3):
            ax.axvline(x, color="tab:red", lw=0.6, ls=":")
        ax.set_title(setting, fontsize=9)
        ax.set_xlabel("DSC points vs fp32")
    axes[0][0].set_yticks(range(len(cases)), [c.replace(".npz", "") for c in cases], fontsize=7)
    axes[0][0].invert_yaxis()
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle(f"int8 vs fp32 per case (dotted: -0.3 and -2 points); {cpu}", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
