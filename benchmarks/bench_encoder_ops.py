"""``make bench-encoder-ops``: where each encoder's time goes, by encoder group and precision.

For the int8 encoder the predictor runs and the float one, in each CPU setting (a fresh process
each: the ISA cap must be set before OpenVINO loads): milliseconds a slice (median of interleaved
rounds), then OpenVINO's own per-node counters summed by encoder group (patch embedding, stages
0-3, neck) and by the precision the node ran in (int8 kernels, float ones), so that what stays
float in the int8 graph, and what it costs on a CPU without VNNI, is a printed figure.  Also the
throughput with two infer requests in flight on two streams (what overlapping slices could buy).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.cpu import describe, run_setting, settings, settings_note

ROOT = Path(__file__).resolve().parents[1]
GROUPS = ("patch_embed", "layers.0", "layers.1", "layers.2", "layers.3", "neck")


def group_of(node_name: str) -> str:
    """The encoder group a node belongs to, by its ONNX-derived name; 'other' where none."""
    return next((g for g in GROUPS if f"/{g}/" in node_name or node_name.startswith(f"{g}/")), "other")


def precision_of(exec_type: str) -> str:
    """'int8' for OpenVINO's integer kernels (exec types ending in I8/i8/u8), else 'float'."""
    return "int8" if exec_type.lower().endswith(("i8", "u8")) else "float"


def breakdown(nodes) -> dict[str, dict[str, float]]:
    """(node name, exec type, ms) of the executed nodes -> group -> precision -> ms."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: {"int8": 0.0, "float": 0.0})
    for name, exec_type, ms in nodes:
        out[group_of(name)][precision_of(exec_type)] += ms
    return {g: dict(v) for g, v in out.items()}


def _encoder_files(models: Path) -> dict[str, Path]:
    from qmedsam.precision.setting import choose_encoder
    from qmedsam.model.spec import ENCODER_FLOAT

    int8, _ = choose_encoder("auto")
    if int8 == ENCODER_FLOAT.name:                 # a CPU where auto runs float: the int8 one it would force
        int8, _ = choose_encoder("int8")
    return {int8: models / f"{int8}.xml", ENCODER_FLOAT.name: models / f"{ENCODER_FLOAT.name}.xml"}


def measure(models: Path, rounds: int) -> dict:
    import openvino as ov

    from qmedsam.precision.setting import float_ops_for
    from qmedsam.model.spec import ENCODER_FLOAT

    core = ov.Core()
    x = [np.random.default_rng(i).random((1, 3, 256, 256), dtype=np.float32) for i in range(4)]
    precision = float_ops_for("auto")
    cfg = {"PERFORMANCE_HINT": "LATENCY"}
    if precision != "auto":
        cfg["INFERENCE_PRECISION_HINT"] = precision
    files = _encoder_files(models)
    # the float encoder in f32, the float model's arithmetic, as the runtime runs it
    configs = {n: dict(cfg, INFERENCE_PRECISION_HINT="f32") if n == ENCODER_FLOAT.name else cfg for n in files}
    compiled = {n: core.compile_model(str(path), "CPU", dict(configs[n], PERF_COUNT=True)) for n, path in files.items()}
    requests = {n: m.create_infer_request() for n, m in compiled.items()}
    for r in requests.values():                    # warm-up
        for k in range(2):
            r.infer({0: x[k]})
    times = {n: [] for n in requests}
    for i in range(rounds):                        # interleaved: a slow spell hits both encoders
        for n, r in requests.items():
            t = time.perf_counter()
            r.infer({0: x[i % 4]})
            times[n].append(1000 * (time.perf_counter() - t))
    result = {}
    for n, r in requests.items():
        nodes = [(p.node_name, p.exec_type, p.real_time.total_seconds() * 1000) for p in r.profiling_info
                 if p.status == p.Status.EXECUTED]
        streams = core.compile_model(str(files[n]), "CPU",
                                     dict(configs[n], PERFORMANCE_HINT="THROUGHPUT", NUM_STREAMS=2))
        queue = ov.AsyncInferQueue(streams, 2)
        for k in range(4):
            queue.start_async({0: x[k]})
        queue.wait_all()
        t = time.perf_counter()
        for k in range(2 * rounds):
            queue.start_async({0: x[k % 4]})
        queue.wait_all()
        result[n] = {"ms": statistics.median(times[n]), "groups": breakdown(nodes),
                     "two_streams_ms": 1000 * (time.perf_counter() - t) / (2 * rounds)}
    return {"float_ops": precision, "encoders": result}


def report(setting: str, res: dict) -> None:
    print(f"\n[{setting}] float leftovers: {res['float_ops']}")
    for name, r in res["encoders"].items():
        groups = r["groups"]
        total = sum(v["int8"] + v["float"] for v in groups.values())
        print(f"  {name}: {r['ms']:.0f} ms a slice (median); two streams, two in flight: "
              f"{r['two_streams_ms']:.0f} ms a slice ({r['ms'] / r['two_streams_ms']:.2f}x); "
              f"per-node counters sum to {total:.0f} ms, float {sum(v['float'] for v in groups.values()):.0f} ms")
        for g in (*GROUPS, "other"):
            if g in groups:
                v = groups[g]
                print(f"    {g:12s} int8 {v['int8']:7.1f} ms   float {v['float']:7.1f} ms")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.models, args.rounds)))
        return
    print(f"CPU: {describe()}")
    chosen = settings()
    if settings_note(chosen):
        print(settings_note(chosen))
    for setting in chosen:
        print(f"measuring: {setting}", file=sys.stderr, flush=True)
        report(setting, run_setting("benchmarks.bench_encoder_ops", setting,
                                    ["--models", str(args.models), "--rounds", str(args.rounds)]))


if __name__ == "__main__":
    main()
