"""``make trace-depth``: how deep the runtime's own call stack is at each OpenVINO inference call.

One process, one short 3D case of the public mix (:mod:`tools.case_mix`), run through
``qmedsam.predict.main`` twice: the first fills the compile cache, the second is traced.  Every
``InferRequest.infer`` and ``start_async`` counts the frames of ``src/qmedsam`` on the stack
(from ``main`` down); the deepest stack is printed with its frames.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASE = "3DBox_CT_short0.npz"


def runtime_stack(frame, runtime: str) -> list[str]:
    """The frames of files under ``runtime`` from ``frame`` outwards, innermost first, as 'module.function'."""
    out = []
    while frame is not None:
        path = frame.f_code.co_filename
        if path.startswith(runtime):
            out.append(f"{path[len(runtime):-3].replace('/', '.')}.{frame.f_code.co_name}")
        frame = frame.f_back
    return out


def traced(run, runtime: str) -> list[list[str]]:
    """Run ``run()`` with OpenVINO's inference calls wrapped; the runtime stack of each call."""
    import openvino as ov

    stacks: list[list[str]] = []
    originals = {name: getattr(ov.InferRequest, name) for name in ("infer", "start_async")}

    def wrap(original):
        def call(self, *args, **kwargs):
            stacks.append(runtime_stack(sys._getframe(1), runtime))
            return original(self, *args, **kwargs)
        return call

    for name, original in originals.items():
        setattr(ov.InferRequest, name, wrap(original))
    try:
        run()
    finally:
        for name, original in originals.items():
            setattr(ov.InferRequest, name, original)
    return stacks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mix", type=Path, default=ROOT / "out" / "case-mix", help="made by tools.case_mix if missing")
    ap.add_argument("--case", default=CASE)
    ap.add_argument("--limit", type=int, default=9, help="exit 1 where the deepest stack is deeper")
    ap.add_argument("--src", type=Path, default=ROOT / "src",
                    help="the src folder whose qmedsam runs (another revision's worktree, to compare)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(args.src.resolve()))
    runtime = str(args.src.resolve() / "qmedsam") + "/"
    if not (args.mix / "inputs" / args.case).is_file():
        from tools.case_mix import write_mix

        write_mix(args.mix)
    for name in [m for m in sys.modules if m == "qmedsam" or m.startswith("qmedsam.")]:
        del sys.modules[name]               # imported from --src, not from an installed checkout
    from qmedsam.predict import main as predict

    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "inputs"
        inputs.mkdir()
        (inputs / args.case).write_bytes((args.mix / "inputs" / args.case).read_bytes())
        argv = ["-i", str(inputs), "-q", "--cache", str(Path(tmp) / "cache")]
        assert predict(argv + ["-o", str(Path(tmp) / "warm")]) == 0
        stacks = traced(lambda: predict(argv + ["-o", str(Path(tmp) / "out")]), runtime)
    depths = [len(s) for s in stacks]
    deepest = max(stacks, key=len)
    print(f"{args.case}: {len(stacks)} OpenVINO inference calls; runtime frames at a call: deepest {max(depths)}, "
          f"median {statistics.median(depths):g}")
    print("deepest: " + " -> ".join(reversed(deepest)))
    return 0 if max(depths) <= args.limit else 1


if __name__ == "__main__":
    raise SystemExit(main())
