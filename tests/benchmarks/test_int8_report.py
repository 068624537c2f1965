"""``make bench-int8``'s report: the rows of each setting and the spread of each int8 row across them."""
from benchmarks.bench_int8_accuracy import report


def _setting(int8: float, w7: float, extra: dict | None = None) -> dict:
    row = {"fp32": (0.70, 0.80, ""), "int8": (int8, 0.80, ""), "int8+guard": (int8, 0.80, "encoder"),
           "int8 7-bit+guard": (w7, 0.80, "encoder_w7"), **(extra or {})}
    held = {"MR": {"images": 1, "boxes": 2, "int8": 0.9, "int8+guard": 0.99, "fp32 dithered": 0.95}}
    return {"labelled": {"ct volume": row}, "held_out": held}


def test_the_spread_of_the_7_bit_guarded_row_is_reported_beside_the_default(capsys):
    results = {"default": _setting(0.66, 0.69),
               "organiser-like": _setting(0.69, 0.69, {"int8 8-bit": (0.60, 0.7, "")})}
    report(results)
    out = capsys.readouterr().out
    assert "| ct volume | 0.7000 | 0.8000 | 0.6600" in out
    assert "int8+guard: largest 3.00 (ct volume)" in out
    assert "int8 7-bit+guard: largest 0.00 (ct volume)" in out
    assert "int8 7-bit+guard: mean DSC -1.00 points vs fp32" in out
