"""``make bench-throughput``: cases per minute over a folder of public cases, the ways a dataset is run.

The folder (:mod:`tools.case_mix` with more short nuclei: 24 cases, 2D and 3D, one box to 241, 3 to
128 slices) runs whole, in one command each: the plain run (one process, all cores, the cases in
order), ``--jobs`` 1 to the usable cores, and ``--ray`` on a local Ray cluster started once for the
benchmark (``ray start --head`` on this machine; its actors one core each), and, as the alternative to
processes, as many workers as threads of one process (:mod:`benchmarks.inprocess_workers`).  Configurations alternate
their order round by round; the compile cache is warm for all of them.  Printed: the CPU, cases per
minute and the ratio to the plain run (side by side in one command), the per-case seconds' spread
(efficiency.csv), the cores each run kept busy (its processes' CPU seconds over its wall time: a
plain run that keeps them all busy leaves more workers little to gain, unless they use a core
better), and whether every label map equals the plain run's.  Results go to
``out/bench-throughput/results.json`` and a figure beside it.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from benchmarks.cpu import describe
from qmedsam.run.processes import usable_cores

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out" / "bench-throughput"
PLAIN = "plain"


INPROCESS = "threads of 1 process"      # the in-process alternative to --jobs (benchmarks/inprocess_workers.py)


def configs(cores: int, ray_address: str | None) -> dict[str, list[str]]:
    runs = {PLAIN: []}
    for n in range(1, cores + 1):
        runs[f"--jobs {n}"] = ["--jobs", str(n)]
    runs[f"{cores} {INPROCESS}"] = [INPROCESS, str(cores)]
    if ray_address:
        runs[f"--ray ({cores} actors)"] = ["--ray", ray_address, "--jobs", str(cores), "--threads", "1"]
    return runs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ray(cores: int) -> str | None:
    """A local one-node Ray cluster for the benchmark (None where Ray is not installed)."""
    ray = shutil.which("ray", path=str(Path(sys.executable).parent))
    if ray is None:
        print("  Ray not installed (the cluster extra): --ray not measured")
        return None
    port = free_port()
    subprocess.run([ray, "start", "--head", f"--port={port}", f"--num-cpus={cores}", "--include-dashboard=false",
                    "--disable-usage-stats"], check=True, capture_output=True,
                   env=dict(os.environ, RAY_AUTH_MODE="disabled"))    # a loopback cluster of this benchmark only
    return f"127.0.0.1:{port}"


def stop_ray() -> None:
    ray = shutil.which("ray", path=str(Path(sys.executable).parent))
    if ray:
        subprocess.run([ray, "stop", "--force"], capture_output=True)


def run(inputs: Path, out: Path, cache: Path, options: list[str]) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    command = ["-m", "qmedsam.predict"]
    if options[:1] == [INPROCESS]:
        command, options = ["-m", "benchmarks.inprocess_workers", options[1]], options[2:]
    # the benchmark's own cluster runs without token authentication (start_ray); so does its driver
    env = dict(os.environ, RAY_AUTH_MODE="disabled") if "--ray" in options else None
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, *command, "-i", str(inputs), "-o", str(out), "-q",
                           "--cache", str(cache), *options], capture_output=True, text=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if proc.returncode != 0:
        raise RuntimeError(f"{options}: exit {proc.returncode}: {proc.stderr.strip()[-800:]}")
    with open(out / "efficiency.csv", newline="") as f:
        seconds = [float(r["seconds"]) for r in csv.DictReader(f)]
    # CPU seconds of the run and the processes it waited for (Ray's actors are the cluster's, not counted)
    return {"wall": wall, "case_seconds": seconds, "cpu_s": None if "--ray" in options else cpu}


def same_maps(out: Path, reference: Path) -> bool:
    names = sorted(p.name for p in reference.glob("*.npz"))
    return names == sorted(p.name for p in out.glob("*.npz")) and all(
        np.array_equal(np.load(out / n)["segs"], np.load(reference / n)["segs"]) for n in names)


def spread(xs: list[float]) -> str:
    q = statistics.quantiles(xs, n=10)
    return f"{min(xs):.2f} / {statistics.median(xs):.2f} / {q[-1]:.2f} / {max(xs):.2f}"


def figure(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(results["configs"])
    rates = [results["configs"][k]["cases_per_min"] for k in labels]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    bars = ax.barh(labels[::-1], rates[::-1], color=["#888" if k == PLAIN else "#3b7dd8" for k in labels[::-1]])
    for bar, k in zip(bars, labels[::-1]):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2,
                f" {results['configs'][k]['vs_plain']:.2f}x", va="center", fontsize=9)
    ax.set_xlabel("cases per minute (higher is better)")
    cpu = textwrap.fill(results["cpu"], 90)
    ax.set_title(f"{results['cases']} public cases, {results['cores']} cores, median of {results['rounds']} round(s)\n{cpu}",
                 fontsize=8)
    ax.set_xlim(0, max(rates) * 1.2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def summarize(measured: dict[str, list[dict]], runs: dict[str, list[str]], n: int, cores: int, rounds: int) -> dict:
    """The results of the measured runs, printed as a table: each configuration's median wall time,
    its ratio to the plain run's (overall and round by round: the VM drifts between rounds), the
    cores it kept busy and whether its label maps are the plain run's."""
    results = {"cpu": describe(), "cores": cores, "cases": n, "rounds": rounds, "date": time.strftime("%Y-%m-%d"),
               "configs": {}}
    plain_wall = statistics.median(m["wall"] for m in measured[PLAIN])
    print(f"\n{'configuration':<22} {'wall s':>8} {'cases/min':>10} {'vs plain':>9} {'per round':>12} {'busy':>6}  "
          f"per-case s min/median/p90/max   maps")
    for label, ms in measured.items():
        wall = statistics.median(m["wall"] for m in ms)
        busy = [m["cpu_s"] / m["wall"] for m in ms if m.get("cpu_s")]
        busy = statistics.median(busy) if busy else None
        per_round = [p["wall"] / m["wall"] for p, m in zip(measured[PLAIN], ms)]
        same = label == PLAIN or same_maps(OUT / "runs" / label.replace(" ", "_").strip("-()"), OUT / "runs" / PLAIN)
        results["configs"][label] = {
            "wall_s": round(wall, 2), "cases_per_min": round(60 * n / wall, 2), "vs_plain": round(plain_wall / wall, 3),
            "vs_plain_per_round": [round(x, 3) for x in per_round], "busy_cores": busy and round(busy, 2),
            "case_seconds": ms[-1]["case_seconds"], "maps_identical_to_plain": same, "options": runs[label]}
        rounds_shown = "/".join(f"{x:.2f}" for x in per_round)
        print(f"{label:<22} {wall:8.1f} {60 * n / wall:10.2f} {plain_wall / wall:8.2f}x {rounds_shown:>12} "
              f"{'n/a' if busy is None else f'{busy:.2f}':>6}  {spread(ms[-1]['case_seconds']):<30} "
              f"{'identical' if same else 'DIFFER'}")
    plain_busy = results["configs"][PLAIN]["busy_cores"]
    if plain_busy:
        print(f"the plain run keeps {plain_busy:.2f} of {cores} cores busy: more workers doing the same work per core "
              f"gain at most {cores / plain_busy:.2f}x")
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1, help="times each configuration runs (median kept)")
    ap.add_argument("--no-ray", action="store_true", help="leave --ray out")
    ap.add_argument("--resume", action="store_true", help="keep the runs a stopped benchmark already measured "
                                                          f"({OUT}/measured.json) and do the rest")
    ap.add_argument("--only", default="", help="only the configurations whose label contains one of these "
                                               "comma-separated words (the plain run always runs)")
    args = ap.parse_args(argv)
    from tools.case_mix import write_mix

    cores = usable_cores()
    print(f"CPU: {describe()}; usable cores: {cores}", flush=True)
    data = OUT / "cases"
    if not (data / "inputs").is_dir() or len(list((data / "inputs").glob("*.npz"))) < 24:
        shutil.rmtree(data, ignore_errors=True)
        write_mix(data, short_nuclei=7)
    inputs = data / "inputs"
    n = len(list(inputs.glob("*.npz")))
    cache = OUT / "cache"
    address = None if args.no_ray or (args.only and "ray" not in args.only) else start_ray(cores)
    try:
        runs = configs(cores, address)
        if args.only:
            runs = {k: v for k, v in runs.items() if k == PLAIN or any(w in k for w in args.only.split(","))}
        print(f"{n} cases; warming the compile cache", flush=True)
        warm = OUT / "warm"
        shutil.rmtree(warm, ignore_errors=True)
        warm.mkdir(parents=True)
        for name in ("2DBox_CT_onebox.npz", "3DBox_CT_whole34.npz"):
            shutil.copy(inputs / name, warm)
        run(warm, OUT / "warm-out", cache, [])
        log = OUT / "measured.json"
        kept = json.loads(log.read_text()) if args.resume and log.exists() else {}
        measured: dict[str, list[dict]] = {k: kept.get(k, [])[:args.rounds] for k in runs}
        for r in range(args.rounds):
            order = list(runs) if r % 2 == 0 else list(runs)[::-1]
            for label in order:
                if len(measured[label]) > r:
                    continue
                result = run(inputs, OUT / "runs" / label.replace(" ", "_").strip("-()"), cache, runs[label])
                measured[label].append(result)
                log.write_text(json.dumps(measured))
                print(f"  round {r + 1}: {label:<22} {result['wall']:7.1f} s", flush=True)
    finally:
        if address:
            stop_ray()
    results = summarize(measured, runs, n, cores, args.rounds)
    (OUT / "results.json").write_text(json.dumps(results, indent=1))
    figure(results, OUT / "throughput.png")
    print(f"\nresults: {OUT / 'results.json'}, figure: {OUT / 'throughput.png'}")
    return 0 if all(c["maps_identical_to_plain"] for c in results["configs"].values()) else 1

if __name__ == "__main__":
    raise SystemExit(main())
