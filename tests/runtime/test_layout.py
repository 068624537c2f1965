"""The runtime package holds only what predict.sh runs: standard library, numpy, openvino, cv2."""
import ast
import sys

from conftest import ROOT

RUNTIME = ROOT / "src" / "qmedsam"
ALLOWED = {"numpy", "openvino", "cv2", "qmedsam", "__future__"}


def imported_roots(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module


def test_runtime_modules_import_only_the_standard_library_numpy_openvino_cv2_and_themselves():
    outside = {f"{p.name} imports {name}" for p in RUNTIME.glob("*.py") for name in imported_roots(p)
               if name.split(".")[0] not in ALLOWED | set(sys.stdlib_module_names)}
    assert not outside, sorted(outside)
    runtime = {p.stem for p in RUNTIME.glob("*.py")}
    strays = {f"{p.name} imports {name}" for p in RUNTIME.glob("*.py") for name in imported_roots(p)
              if name.startswith("qmedsam.") and name.split(".")[1] not in runtime}
    assert not strays, sorted(strays)


def test_the_check_would_catch_an_evaluation_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import numpy as np\nfrom scipy import ndimage\nfrom qmedsam_eval.metrics import dice\n")
    roots = {name.split(".")[0] for name in imported_roots(bad)}
    assert roots - ALLOWED - set(sys.stdlib_module_names) == {"scipy", "qmedsam_eval"}


def test_no_benchmark_or_evaluation_module_in_the_runtime():
    names = {p.stem for p in RUNTIME.glob("*.py")}
    assert not {n for n in names if n.startswith("bench") or n in {
        "evaluate", "scoring", "metrics", "surfels", "score_report", "compare_overlay", "timing", "memcap",
        "convert", "label_boxes", "agreement"}}
