"""Human-facing views of scores: a Markdown table per modality and a bar chart per modality."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from qmedsam_eval.scoring import CaseScore


def by_modality(scores: list[CaseScore]) -> dict[str, list[CaseScore]]:
    groups = defaultdict(list)
    for s in scores:
        groups[s.modality].append(s)
    return dict(sorted(groups.items()))


def summary_markdown(scores: list[CaseScore]) -> str:
    """Mean DSC/NSD per modality (a modality's score is the mean over its cases) and overall."""
    lines = ["| modality | cases | DSC | NSD |", "|---|---:|---:|---:|"]
    for modality, group in by_modality(scores).items():
        d = np.nanmean([s.dsc for s in group])
        n = np.nanmean([s.nsd for s in group])
        lines.append(f"| {modality} | {len(group)} | {100 * d:.2f}% | {100 * n:.2f}% |")
    mods = by_modality(scores).values()
    d = np.nanmean([np.nanmean([s.dsc for s in g]) for g in mods])
    n = np.nanmean([np.nanmean([s.nsd for s in g]) for g in mods])
    lines.append(f"| **mean over modalities** | {len(scores)} | **{100 * d:.2f}%** | **{100 * n:.2f}%** |")
    problems = [s for s in scores if s.problem]
    if problems:
        lines.append("")
        lines += [f"- {s.case}: {s.problem}" for s in problems]
    return "\n".join(lines)


def bar_charts(scores: list[CaseScore], out_dir: Path) -> list[Path]:
    """One PNG per modality: DSC and NSD per case."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for modality, group in by_modality(scores).items():
        x = np.arange(len(group))
        fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(group) + 2), 3.2))
        ax.bar(x - 0.2, [s.dsc for s in group], 0.4, label="DSC")
        ax.bar(x + 0.2, [s.nsd for s in group], 0.4, label="NSD")
        ax.set_xticks(x, [Path(s.case).stem for s in group], rotation=45, ha="right", fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_title(f"{modality}: DSC {np.nanmean([s.dsc for s in group]):.3f}, "
                     f"NSD {np.nanmean([s.nsd for s in group]):.3f}")
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        path = out_dir / f"scores_{modality}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
