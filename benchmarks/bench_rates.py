"""``make bench-rates``: the per-CPU-class seconds the precision policy prices a case with.

Each CPU class ((:class:`qmedsam.precision.cpu.CpuFacts`)) this CPU can stand in for is measured in a fresh
process under the matching oneDNN ISA cap (AMX, AVX-512 with VNNI and bf16, with VNNI only,
AVX-512 alone as the organisers' CPU, AVX2): a float and an int8 (7-bit) encoder pass with the
float leftovers the predictor would use there, each as a 3D case runs it (overlapping the
decoding of the slice before), loading each encoder from a warm compile cache,
the decoder's per-image step and one box.  Writes ``src/qmedsam/precision/cpu_rates.json`` (``--write``) and prints the table.
The figures' scale follows the CPU; the policy only compares them with each other.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.cpu import describe

ROOT = Path(__file__).resolve().parents[1]
# class -> the ISA cap that makes this CPU run as that class
CAPS = {"amx": "", "avx512_bf16": "AVX512_CORE_BF16", "avx512_vnni": "AVX512_CORE_VNNI",
        "avx512": "AVX512_CORE", "avx2": "AVX2"}


def measure(models: Path, cache: Path, runs: int = 7) -> dict:
    """Seconds of this process's CPU setting (the cap is already in the environment)."""
    import numpy as np
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints

    from qmedsam.precision.setting import float_ops_for

    core = ov.Core()
    core.set_property({props.cache_dir: str(cache)})
    base = {hints.performance_mode: hints.PerformanceMode.LATENCY}
    int8_ops = float_ops_for("auto")
    int8_cfg = dict(base, **({} if int8_ops == "auto" else {hints.inference_precision: int8_ops}))
    f32_cfg = dict(base, **{hints.inference_precision: "f32"})
    x = np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)
    out = {}
    for key, graph, cfg in (("float", "encoder_float", f32_cfg), ("int8", "encoder_w7", int8_cfg)):
        t = time.perf_counter()
        core.compile_model(str(models / f"{graph}.xml"), "CPU", cfg)
        out[f"{key}_load"] = time.perf_counter() - t
    from qmedsam.model.model import Model, ModelSettings

    # A pass as a 3D case runs it: the next slice encoded while the current one is decoded (both
    # share the 2 cores, which isolated passes overstate int8's gain by: 1.24x alone, ~1.07x in a
    # case on the organisers' kind of CPU, make bench-mix's ledgers)
    model = Model(models, ModelSettings(cache, float_ops=int8_ops, encoder="encoder_w7"))
    boxes = np.asarray([[[60.0, 70.0, 110.0, 130.0]]] * 3, np.float32)
    state = None
    for key, graph in (("float", "encoder_float"), ("int8", "encoder_w7")):
        emb, _ = model.encode(x, graph)
        pending = model.start_encode(x, graph)
        t = time.perf_counter()
        for _ in range(runs):
            emb, pending = model.finish_encode(pending), model.start_encode(x, graph)
            state = model.prepare(emb, state)
            model.decode(state, boxes)
        out[f"{key}_pass"] = (time.perf_counter() - t) / runs
        model.finish_encode(pending)
    out["prepare_image"] = _median_seconds(lambda: model.prepare(emb, state), runs)
    out["decode_box"] = _median_seconds(lambda: model.decode(state, boxes[:1]), runs)
    return {k: round(v, 4) for k, v in out.items()}


def _median_seconds(step, runs: int) -> float:
    """Median wall seconds of ``step()`` over ``runs`` calls, after one untimed call."""
    step()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run_class(cls: str, models: Path, cache: Path, processes: int = 3) -> dict:
    """The median of each figure over ``processes`` fresh processes with a warm cache."""
    env = dict(os.environ)
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    if CAPS[cls]:
        env["ONEDNN_MAX_CPU_ISA"] = CAPS[cls]
    cmd = [sys.executable, "-m", "benchmarks.bench_rates", "--measure", "--models", str(models), "--cache", str(cache)]
    subprocess.run(cmd, env=env, check=True, capture_output=True)          # fills the compile cache
    runs = [json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True,
                                      encoding="utf-8").stdout.strip().splitlines()[-1]) for _ in range(processes)]
    return {k: round(statistics.median(r[k] for r in runs), 4) for k in runs[0]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--write", action="store_true", help="write the table into src/qmedsam/precision/cpu_rates.json")
    args = ap.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.models, args.cache)))
        return 0
    from qmedsam.precision.cpu import CpuFacts
    from qmedsam.precision.policy import RATES_FILE

    here = CpuFacts.here().cls
    order = list(CAPS)
    classes = order[order.index(here):]          # this CPU and every class below it
    print(f"CPU: {describe()}; runs as class {here}")
    table = {}
    with tempfile.TemporaryDirectory() as tmp:
        for cls in classes:
            table[cls] = run_class(cls, args.models, Path(tmp) / cls)
            r = table[cls]
            print(f"  {cls:12s} float pass {r['float_pass']:.3f} s, int8 pass {r['int8_pass']:.3f} s "
                  f"({r['float_pass'] / r['int8_pass']:.2f}x); load float {r['float_load']:.3f} s, int8 "
                  f"{r['int8_load']:.3f} s; decoder per image {1000 * r['prepare_image']:.1f} ms, a box "
                  f"{1000 * r['decode_box']:.1f} ms", flush=True)
    if args.write:
        RATES_FILE.write_text(json.dumps({"cpu": describe(), "made_by": "make bench-rates", "classes": table},
                                         indent=1) + "\n")
        print(f"written: {RATES_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
