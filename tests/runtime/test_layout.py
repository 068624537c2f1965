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


def module_level_imports(path):
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module


# none: extras reach the runtime through entry points (qmedsam.run.pools.extra_pool), never by name
LAZY: dict[str, set[str]] = {}


def modules():
    return [p for p in RUNTIME.rglob("*.py") if "models" not in p.relative_to(RUNTIME).parts]


def test_runtime_modules_import_only_the_standard_library_numpy_openvino_cv2_and_themselves():
    outside = {f"{p.name} imports {name}" for p in modules() for name in imported_roots(p)
               if name.split(".")[0] not in ALLOWED | set(sys.stdlib_module_names)
               and name not in LAZY.get(p.name, set())}
    assert not outside, sorted(outside)
    eager = {f"{p.name} imports {name} when loaded" for p in modules() for name in module_level_imports(p)
             if name in LAZY.get(p.name, set())}
    assert not eager, sorted(eager)
    runtime = {".".join(("qmedsam",) + p.relative_to(RUNTIME).with_suffix("").parts).removesuffix(".__init__")
               for p in modules()}
    strays = {f"{p.name} imports {name}" for p in modules() for name in imported_roots(p)
              if name.startswith("qmedsam.") and name not in runtime}
    assert not strays, sorted(strays)


def test_every_runtime_module_is_short_and_lives_in_a_subpackage_by_job():
    """No module over 250 lines; only the entry points (the command line, the API) at the top."""
    long = {str(p.relative_to(RUNTIME)): n for p in modules() if (n := len(p.read_text().splitlines())) > 250}
    assert not long, long
    top = {p.name for p in RUNTIME.glob("*.py")}
    assert top == {"__init__.py", "predict.py", "api.py"}, top


def test_the_check_would_catch_an_evaluation_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import numpy as np\nfrom scipy import ndimage\nfrom qmedsam_eval.metrics import dice\n")
    roots = {name.split(".")[0] for name in imported_roots(bad)}
    assert roots - ALLOWED - set(sys.stdlib_module_names) == {"scipy", "qmedsam_eval"}


def test_no_benchmark_or_evaluation_module_in_the_runtime():
    names = {p.stem for p in modules()}
    assert not {n for n in names if n.startswith("bench") or n in {
        "evaluate", "scoring", "metrics", "surfels", "score_report", "compare_overlay", "timing", "memcap",
        "convert", "label_boxes", "agreement"}}


def test_the_plain_predictor_never_imports_ray(tmp_path):
    """The submission image has no Ray: a plain run (and --jobs) must not even try to import it."""
    import subprocess

    from conftest import SAMPLES

    code = ("import sys, qmedsam.predict as p; rc = p.main(['-i', sys.argv[1], '-o', sys.argv[2], '-q', '--jobs', '1']); "
            "rc |= p.main(['-i', sys.argv[1], '-o', sys.argv[2] + '2', '-q']); "
            "assert not [m for m in sys.modules if m.split('.')[0] in ('ray', 'qmedsam_cluster')]; sys.exit(rc)")
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "2DBox_CT_0002.npz").write_bytes((SAMPLES / "inputs" / "2DBox_CT_0002.npz").read_bytes())
    result = subprocess.run([sys.executable, "-c", code, str(folder), str(tmp_path / "out")], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
