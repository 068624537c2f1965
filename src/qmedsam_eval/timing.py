"""Organiser-style timed runs: one case per run, whole-run wall time, output checked.

For each case a persistent ``inputs`` folder is emptied and given only that case;
the ``outputs`` folder persists across cases (as the organisers' does, which is
what lets the compile cache help); the run is timed from process start to exit.
With Docker the command is the organisers' one; with ``local`` it is
``sh predict.sh`` of this checkout, optionally under a memory cgroup.
"""
from __future__ import annotations

import csv
import os
import shutil
import statistics
import subprocess
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from qmedsam.cases.read import is_3d_name
from qmedsam_eval.memcap import memory_cgroup, parse_size

REPO = Path(__file__).resolve().parents[2]
FIELDS = ("case", "seconds", "exit_code", "output_ok", "problem")


@dataclass
class TimedRun:
    case: str
    seconds: float
    exit_code: int
    output_ok: bool
    problem: str = ""


def docker_command(image: str, inputs: Path, outputs: Path, memory: str, name: str) -> list[str]:
    return ["docker", "container", "run", "-m", memory, "--name", name, "--rm", "--network", "none",
            "-v", f"{inputs.resolve()}/:/workspace/inputs/", "-v", f"{outputs.resolve()}/:/workspace/outputs/",
            image, "/bin/bash", "-c", "sh predict.sh"]


def check_output(case_path: Path, output: Path) -> str:
    """'' when ``output`` is a valid result for ``case_path``, else the problem in a few words."""
    if not output.is_file():
        return "no output file"
    try:
        with np.load(case_path) as src:
            image_shape, n_boxes = src["imgs"].shape, len(np.atleast_2d(src["boxes"]))
        with np.load(output) as out:
            if "segs" not in out.files:
                return f"no 'segs' key (has {', '.join(out.files)})"
            segs = out["segs"]
    except Exception as e:  # unreadable files are a result to report, not a crash
        return f"unreadable ({type(e).__name__}: {e})"
    want = image_shape if is_3d_name(case_path.name) else image_shape[:2]
    if segs.shape != want:
        return f"segs shape {segs.shape}, expected {want}"
    if segs.dtype.kind not in "iu":
        return f"segs dtype {segs.dtype} is not integer"
    if segs.size and int(segs.max()) > n_boxes:
        return f"label {int(segs.max())} > number of boxes {n_boxes}"
    return ""


def time_cases(cases: list[Path], work: Path, image: str | None = None, memory: str = "8G",
               timeout: float | None = None, progress=None, log=print,
               docker_env: dict | None = None) -> list[TimedRun]:
    """Run each case alone and time it; ``image=None`` runs ``predict.sh`` locally.

    ``docker_env`` is the environment for the ``docker`` client (e.g. a private ``DOCKER_HOST``).
    """
    inputs, outputs = work / "inputs", work / "outputs"
    inputs.mkdir(parents=True, exist_ok=True)
    outputs.mkdir(parents=True, exist_ok=True)
    outputs.chmod(0o777)          # the image runs as a non-root user
    runs = []
    no_cap = nullcontext((None, "memory capped by docker run -m"))
    with memory_cgroup(parse_size(memory)) if image is None else no_cap as (preexec, note):
        if image is None:
            log(f"local runs: {note}")
        for i, case in enumerate(progress(cases) if progress else cases):
            for old in inputs.glob("*.npz"):
                old.unlink()
            shutil.copy2(case, inputs / case.name)
            result = outputs / case.name
            if result.exists():
                result.unlink()
            if image is None:
                cmd = ["sh", str(REPO / "predict.sh")]
                env = dict(os.environ, QMEDSAM_INPUTS=str(inputs), QMEDSAM_OUTPUTS=str(outputs))
            else:
                cmd = docker_command(image, inputs, outputs, memory, f"qmedsam-time-{os.getpid()}-{i}")
                env = docker_env
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(cmd, env=env, preexec_fn=preexec, capture_output=True, encoding="utf-8", errors="replace",
                                      timeout=timeout)
                code, tail = proc.returncode, (proc.stderr.strip().splitlines() or [""])[-1]
            except subprocess.TimeoutExpired:
                code, tail = -9, f"timed out after {timeout:g} s"
            seconds = time.perf_counter() - t0
            problem = check_output(case, result)
            if code != 0 and not problem:
                problem = f"exit {code}: {tail}"
            elif code != 0:
                problem = f"exit {code}: {tail}; {problem}"
            runs.append(TimedRun(case.name, round(seconds, 3), code, not problem, problem))
        for old in inputs.glob("*.npz"):
            old.unlink()
    return runs


def write_csv(runs: list[TimedRun], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        w.writeheader()
        for r in runs:
            w.writerow(asdict(r))


def read_csv(path: Path) -> dict[str, dict]:
    with open(path, newline="") as fh:
        return {row["case"]: row for row in csv.DictReader(fh)}


def summary_table(runs: list[TimedRun]) -> str:
    times = [r.seconds for r in runs]
    lines = ["| case | seconds | exit | output |", "|---|---:|---:|---|"]
    lines += [f"| {r.case} | {r.seconds:.2f} | {r.exit_code} | {'ok' if r.output_ok else r.problem} |"
              for r in runs]
    if times:
        lines.append(f"| **{len(runs)} cases, {sum(r.output_ok for r in runs)} ok** | mean "
                     f"{statistics.mean(times):.2f}, median {statistics.median(times):.2f}, total "
                     f"{sum(times):.1f} | | |")
    return "\n".join(lines)


def compare_table(a_path: Path, b_path: Path) -> str:
    """Per-case times of two timing CSVs and their ratio B/A (below 1: B is faster)."""
    a, b = read_csv(a_path), read_csv(b_path)
    lines = [f"| case | A: {a_path.name} (s) | B: {b_path.name} (s) | B/A |", "|---|---:|---:|---:|"]
    ratios = []
    for case in sorted(set(a) | set(b)):
        ta = float(a[case]["seconds"]) if case in a else None
        tb = float(b[case]["seconds"]) if case in b else None
        if ta and tb:
            ratios.append(tb / ta)
        lines.append(f"| {case} | {'-' if ta is None else f'{ta:.2f}'} | {'-' if tb is None else f'{tb:.2f}'} | "
                     f"{f'{tb / ta:.2f}' if ta and tb else '-'} |")
    if ratios:
        geo = float(np.exp(np.mean(np.log(ratios))))
        lines.append(f"| **geometric mean over {len(ratios)} cases** | | | **{geo:.2f}** |")
    return "\n".join(lines)
