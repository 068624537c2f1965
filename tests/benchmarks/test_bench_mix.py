"""bench-mix's figures from its per-case results: ratios against fp32, accuracy, spread."""
import pytest

from benchmarks.bench_mix import geomean, spread, summary


def _res(walls: dict, dscs: dict) -> dict:
    return {case: {v: {"wall": walls[case][v], "dsc": dscs[case][v], "nsd": dscs[case][v]} for v in walls[case]}
            for case in walls}


def test_totals_geomeans_and_the_worst_case_are_against_fp32():
    res = _res({"a": {"default": 1.0, "fp32": 2.0}, "b": {"default": 4.0, "fp32": 4.0}},
               {"a": {"default": 0.80, "fp32": 0.81}, "b": {"default": 0.50, "fp32": 0.50}})
    line = summary(res, ["default", "fp32"])[0]
    assert "total 1.20x" in line and f"geomean {geomean([2.0, 1.0]):.2f}x" in line
    assert "slowest case 1.00x (b)" in line and "worst DSC vs fp32 -1.00 points (a)" in line
    assert geomean([2.0, 0.5]) == pytest.approx(1.0)


def test_spread_is_the_largest_move_of_one_case_between_settings():
    one = _res({"a": {"default": 1.0}}, {"a": {"default": 0.70}})
    two = _res({"a": {"default": 1.0}}, {"a": {"default": 0.72}})
    assert "2.00 points (a)" in spread({"default": one, "organiser-like": two})
    assert "no spread" in spread({"default": one})


def test_a_case_is_slower_than_the_baseline_only_beyond_the_runs_noise():
    from benchmarks.bench_mix import against_baseline

    def row(walls, rss):
        return {"wall": sorted(walls)[len(walls) // 2], "walls": walls, "ledger": {"peak_rss_mb": rss}}

    res = {"a": {"baseline r": row([2.0, 2.1, 2.0], "500"), "default": row([2.2, 2.25, 2.2], "510")},
           "b": {"baseline r": row([3.0, 3.3, 3.0], "600"), "default": row([3.1, 3.2, 3.1], "600")}}
    lines = against_baseline(res, "baseline r")
    assert lines[0].endswith("SLOWER") and "peak RSS 500/510 MB" in lines[0]
    assert not lines[1].endswith("SLOWER")                         # 0.1 s later, within 0.3 s of noise
    assert lines[-1].startswith("  default vs baseline r: total 0.943x") and lines[-1].endswith("a")
