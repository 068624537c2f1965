"""The precision policy: CPU classes, a case's planned passes, the cheaper plan by the rates table;
and, on the real predictor, that a case loads only the graphs its plan runs and its ledger says so."""
import csv
import json

from pathlib import Path

import numpy as np
import pytest

from qmedsam.precision.cpu import CpuFacts
from qmedsam.precision.policy import RATES_FILE, decide, expected_seconds, load_rates, plan_case, slice_load
from qmedsam.precision.setting import FLOAT_ENCODER, W7_ENCODER

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "inputs"
AMX = {"avx512f", "avx512_vnni", "avx512_bf16", "amx_int8"}
# A class where int8 halves the pass and loads cheaply, as on an AMX CPU
FAST = {"float_pass": 0.30, "int8_pass": 0.13, "float_load": 0.16, "int8_load": 0.29, "decode_box": 0.01}
# ... and one where int8 saves a tenth, as on the organisers' AVX-512 CPU
SLOW = dict(FAST, int8_pass=0.27, int8_load=0.22)


@pytest.mark.parametrize("flags, cap, want", [
    (AMX, "", "amx"), (AMX, "AVX512_CORE_BF16", "avx512_bf16"), (AMX, "AVX512_CORE_VNNI", "avx512_vnni"),
    (AMX, "AVX512_CORE", "avx512"), (AMX, "AVX2", "avx2"), ({"avx512f", "avx512_vnni"}, "", "avx512_vnni"),
    ({"avx512f"}, "", "avx512"), ({"avx2"}, "", "avx2"), ({"avx512f"}, "AVX512_CORE_AMX", "avx512"),
])
def test_cpu_class_is_what_the_cpu_and_its_isa_cap_allow(flags, cap, want):
    assert CpuFacts(flags, cap).cls == want


def test_slice_load_counts_each_touched_slice_once():
    boxes = np.array([[0, 0, 2, 9, 9, 5], [0, 0, 4, 9, 9, 8], [0, 0, 20, 9, 9, 20]])
    assert slice_load(boxes) == (8, (4 + 5 + 1) / 8)          # slices 2..8 and 20
    assert slice_load(np.zeros((0, 6))) == (0, 0.0)
    assert slice_load(np.array([[1, 2, 3, 4]])) == (0, 0.0)


def test_a_2d_image_and_a_cpu_where_int8_does_not_pay_run_in_float():
    rates = {"amx": FAST, "avx2": FAST}
    assert decide(False, 1, 1.0, rates, CpuFacts(AMX, "")).encoder == FLOAT_ENCODER
    assert decide(True, 100, 1.0, rates, CpuFacts({"avx2"}, "")).encoder == FLOAT_ENCODER
    assert decide(True, 100, 1.0, rates, CpuFacts(AMX, ""), has_int8=False).encoder == FLOAT_ENCODER


def test_the_guard_runs_only_where_the_passes_pay_for_its_probes():
    plans = {p: decide(True, p, 1.0, {"amx": FAST, "avx512": SLOW}, CpuFacts(AMX, "")) for p in range(1, 60)}
    short = [p for p, plan in plans.items() if not plan.guard]
    assert short == list(range(1, short[-1] + 1)) and 2 < short[-1] < 12       # one threshold, a few passes
    assert plans[40].encoder == W7_ENCODER and plans[40].label == "int8+guard"
    assert plans[2].label == "float" and "expected" in plans[2].reason
    slow = [p for p in range(1, 60) if not decide(True, p, 1.0, {"avx512": SLOW}, CpuFacts(AMX, "AVX512_CORE")).guard]
    assert slow[-1] > short[-1]                               # a smaller int8 gain needs a longer case


def test_expected_seconds_grow_with_the_passes_and_the_guard_grows_slower():
    a, b = expected_seconds(10, 1.0, FAST), expected_seconds(20, 1.0, FAST)
    assert b["float"] - a["float"] > b["int8+guard"] - a["int8+guard"] > 0


def test_an_unmeasured_cpu_class_keeps_the_guard():
    plan = decide(True, 3, 1.0, {}, CpuFacts(AMX, ""))
    assert plan.guard and "no measured rates" in plan.reason


def test_the_shipped_table_covers_every_class_with_the_figures_the_policy_reads():
    table = json.loads(RATES_FILE.read_text())
    assert set(load_rates()) == {"amx", "avx512_bf16", "avx512_vnni", "avx512", "avx2"}
    for rate in table["classes"].values():
        assert set(rate) >= set(FAST) and all(v > 0 for v in rate.values())


def test_plan_case_reads_raw_boxes_and_survives_bad_ones():
    boxes = np.array([[0, 0, 0, 9, 9, 59]])
    assert plan_case(True, boxes, {"amx": FAST}, CpuFacts(AMX, "")).guard
    assert not plan_case(True, None, {"amx": FAST}, CpuFacts(AMX, "")).guard           # unreadable: one pass
    assert not plan_case(False, np.array([[0, 0, 9, 9]]), {"amx": FAST}, CpuFacts(AMX, "")).guard


def _ledger(out):
    with open(out / "efficiency.csv", newline="") as f:
        return {r["case"]: r for r in csv.DictReader(f)}


def test_a_case_loads_only_the_graphs_its_plan_runs_and_its_ledger_says_so(tmp_path):
    from qmedsam.predict import main

    inputs = tmp_path / "in"
    inputs.mkdir()
    with np.load(SAMPLES / "3DBox_CT_0001.npz") as d:
        img, boxes = d["imgs"], d["boxes"]
    short = boxes[:1].copy()
    short[0, 2], short[0, 5] = 10, 11                        # one box over two slices: float
    np.savez_compressed(inputs / "3DBox_CT_short.npz", imgs=img, boxes=short)
    np.savez_compressed(inputs / "3DBox_CT_whole.npz", imgs=img, boxes=boxes)
    assert main(["-i", str(inputs), "-o", str(tmp_path / "out"), "-q"]) == 0
    rows = _ledger(tmp_path / "out")
    first, second = rows["3DBox_CT_short.npz"], rows["3DBox_CT_whole.npz"]
    assert first["policy"] == "float" and first["precision"] == "float"
    assert W7_ENCODER not in first["graph_loads"] and FLOAT_ENCODER in first["graph_loads"]
    assert first["encoder_passes"] == f"{FLOAT_ENCODER}=2" and float(first["ready_at_s"]) > 0
    assert float(first["encoder_s"]) > 0 and float(first["decode_s"]) > 0 and float(first["write_s"]) > 0
    whole = plan_case(True, boxes)
    assert second["policy"] == whole.label
    if whole.guard:                                          # int8 pays here: it loads for this case only
        assert W7_ENCODER in second["graph_loads"] and int(second["probe_slices"]) >= 1
        assert "guard:" in second["reason"]
    passes = sum(int(kv.split("=")[1]) for kv in second["encoder_passes"].split())
    assert passes == int(second["slices_encoded"]) + (int(second["probe_slices"]) if whole.guard else 0)
