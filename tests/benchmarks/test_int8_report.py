"""``make bench-int8``'s report: the rows of each setting and the spread of each int8 row across them."""
from benchmarks.bench_int8_accuracy import report


def _setting(int8: float, w8: float | None = None, extra: dict | None = None) -> dict:
    row = {"fp32": (0.70, 0.80, ""), "int8": (int8, 0.80, ""), "int8+guard": (int8, 0.80, "encoder_w7"),
           **({"int8 8-bit+guard": (w8, 0.80, "encoder")} if w8 is not None else {}), **(extra or {})}
    held = {"MR": {"images": 1, "boxes": 2, "int8": 0.9, "int8+guard": 0.99, "fp32 dithered": 0.95}}
    return {"labelled": {"ct volume": row}, "held_out": held}


def test_each_int8_row_is_reported_with_its_spread_across_the_settings(capsys):
    results = {"default": _setting(0.69, 0.66), "f32 leftovers": _setting(0.69, 0.67),
               "organiser-like": _setting(0.685, 0.60, {"int8 8-bit": (0.60, 0.7, "")})}
    report(results)
    out = capsys.readouterr().out
    assert "| ct volume | 0.7000 | 0.8000 | 0.6900 | 0.8000 | 0.6900 | 0.8000 | 0.6600 | 0.8000 | - | - |" in out
    assert "int8+guard: largest 0.50 (ct volume)" in out
    assert "int8 8-bit+guard: largest 7.00 (ct volume)" in out
    assert "int8 8-bit+guard: mean DSC -4.00 points vs fp32" in out
    assert "int8 8-bit:" not in out.split("per case, DSC spread")[1]   # one setting: no spread


def test_a_row_measured_in_some_settings_only_is_spread_over_those(capsys):
    results = {"default": _setting(0.69, 0.66), "f32 leftovers": _setting(0.68, 0.64),
               "organiser-like": _setting(0.69)}
    report(results)
    out = capsys.readouterr().out
    assert "int8 8-bit+guard: largest 2.00 (ct volume); mean 2.00 (in default, f32 leftovers)" in out
    assert "int8+guard: largest 1.00 (ct volume)" in out


def test_a_saved_run_is_reported_and_drawn_again(tmp_path, capsys):
    import json

    from benchmarks.bench_int8_accuracy import main

    saved = tmp_path / "results.json"
    saved.write_text(json.dumps({"cpu": "test CPU; has avx512f", "results": {
        "default": _setting(0.69, 0.66), "organiser-like": _setting(0.685, 0.60, {"int8 8-bit": (0.60, 0.7, "")})}}))
    main(["--report", str(saved), "--out", str(tmp_path / "fig")])
    out = capsys.readouterr().out
    assert out.startswith("CPU: test CPU; has avx512f") and "int8 8-bit+guard: largest 6.00" in out
    png = (tmp_path / "fig" / "int8-accuracy.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
