"""``make test-wheel``: the package as a user installs it, checked in a fresh virtual environment.

Builds the wheel from the checkout (``pip wheel .``), installs it into a new venv with the
runtime's three dependencies only (``requirements.txt``), checks that the installed models match
the sha256 of every file ``manifest.json`` records, and runs the installed ``qmedsam-predict`` and
the Python API there on the bundled samples: both must write the label maps the checkout writes,
byte for byte.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
API_RUN = """
import sys, numpy as np, qmedsam
from pathlib import Path
seg = qmedsam.Segmenter()
for path in sorted(Path(sys.argv[1]).glob("*.npz")):
    with np.load(path) as case:
        np.save(Path(sys.argv[2]) / (path.stem + ".npy"), seg.segment(case["imgs"], case["boxes"]))
print(qmedsam.__file__)
"""


def _run(cmd: list, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, encoding="utf-8", **kw)


def check(work: Path) -> list[str]:
    """Build, install and compare; returns what was checked (raises on the first failure)."""
    shutil.rmtree(work, ignore_errors=True)
    # the installed package must not see the checkout (make exports PYTHONPATH=src:.)
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    wheels, venv, samples = work / "wheels", work / "venv", ROOT / "samples" / "inputs"
    done = []
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", wheels, ROOT], env=clean)
    wheel = next(wheels.glob("qmedsam-*.whl"))
    done.append(f"built {wheel.name} ({wheel.stat().st_size / 2**20:.1f} MiB)")
    _run([sys.executable, "-m", "venv", venv])
    py = venv / "bin" / "python"
    _run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", ROOT / "requirements.txt", wheel],
         env=clean, cwd=work)
    installed = _run([py, "-m", "pip", "list", "--format", "json"], env=clean, cwd=work).stdout
    names = {p["name"].lower() for p in json.loads(installed)} - {"pip", "setuptools", "wheel", "qmedsam"}
    allowed = {"numpy", "openvino", "opencv-python-headless", "openvino-telemetry", "packaging"}
    if "qmedsam" not in {p["name"].lower() for p in json.loads(installed)}:
        raise AssertionError("the wheel did not install")
    if not names <= allowed:
        raise AssertionError(f"the wheel pulled in more than the runtime's dependencies: {sorted(names - allowed)}")
    done.append(f"installed with {', '.join(sorted(names))}")
    package = Path(_run([py, "-c", "import qmedsam, os; print(os.path.dirname(qmedsam.__file__))"],
                        cwd=work, env=clean).stdout.strip())
    if venv not in package.parents:
        raise AssertionError(f"the venv imports qmedsam from elsewhere than its own site-packages ({package})")
    manifest = json.loads((package / "models" / "manifest.json").read_text())
    shipped = [f for f in manifest["files"] if "/" not in f]
    for name in shipped:
        digest = hashlib.sha256((package / "models" / name).read_bytes()).hexdigest()
        if digest != manifest["files"][name]["sha256"]:
            raise AssertionError(f"installed models/{name} does not match the manifest's sha256")
    done.append(f"{len(shipped)} model files match the manifest's sha256")
    reference = work / "checkout"
    _run([sys.executable, "-m", "qmedsam.predict", "-i", samples, "-o", reference, "-q", "--cache", "none"],
         env=dict(clean, PYTHONPATH=str(ROOT / "src")))
    _run([venv / "bin" / "qmedsam-predict", "-i", samples, "-o", work / "installed", "-q", "--cache", "none"],
         cwd=work, env=clean)
    (work / "api").mkdir()
    _run([py, "-c", API_RUN, samples, work / "api"], cwd=work, env=clean)
    for case in sorted(samples.glob("*.npz")):
        ref = np.load(reference / case.name)["segs"]
        for got, how in ((np.load(work / "installed" / case.name)["segs"], "qmedsam-predict"),
                         (np.load(work / "api" / f"{case.stem}.npy"), "the API")):
            if got.dtype != ref.dtype or not np.array_equal(got, ref):
                raise AssertionError(f"{case.name}: the installed package's {how} differs from the checkout")
    done.append(f"{len(list(samples.glob('*.npz')))} samples identical through qmedsam-predict and the API")
    return done


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=ROOT / "out" / "wheel-check")
    args = ap.parse_args(argv)
    for line in check(args.work):
        print(f"wheel check: {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
