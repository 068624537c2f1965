"""Segment every ``*.npz`` case of an inputs folder into an outputs folder.

Organiser usage (inside the image): ``sh predict.sh`` ==
``python -m qmedsam.predict -i /workspace/inputs -o /workspace/outputs``.
A case that cannot be read or trusted is reported on stderr in one line naming
the file and the reason; the other cases still run; the exit status is 1 if any
case failed.  Outputs are written atomically.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from qmedsam.atomic import save_segs, save_text
from qmedsam.cases import CaseError, load_case
from qmedsam.memory import auto_block_size, peak_rss_bytes

PACKAGE_MODELS = Path(__file__).resolve().parents[2] / "models"
CACHE_NAME = ".qmedsam-cache"
CSV_HEADER = "case,seconds,boxes,slices_encoded,decoder_calls,peak_rss_mb,status\n"


def _env(name: str, default):
    return os.environ.get(name, default)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="qmedsam.predict", description=__doc__.splitlines()[0])
    ap.add_argument("-i", "--inputs", type=Path, default=Path(_env("QMEDSAM_INPUTS", "/workspace/inputs")),
                    help="folder of input cases (*.npz) [env QMEDSAM_INPUTS, default /workspace/inputs]")
    ap.add_argument("-o", "--outputs", type=Path,
                    default=Path(_env("QMEDSAM_OUTPUTS", "/workspace/outputs")),
                    help="folder for <case>.npz results [env QMEDSAM_OUTPUTS, default /workspace/outputs]")
    ap.add_argument("--models", type=Path, default=Path(_env("QMEDSAM_MODELS", PACKAGE_MODELS)),
                    help="folder with encoder.xml/decoder.xml (int8); fp32 uses MODELS/fp32 "
                         "[env QMEDSAM_MODELS]")
    ap.add_argument("--precision", choices=("int8", "fp32"), default=_env("QMEDSAM_PRECISION", "int8"),
                    help="int8 models (default) or the float models in MODELS/fp32")
    ap.add_argument("--cache", default=_env("QMEDSAM_CACHE", ""),
                    help="OpenVINO compile-cache folder; default OUTPUTS/.qmedsam-cache, which persists "
                         "between organiser runs; 'none' disables caching [env QMEDSAM_CACHE]")
    ap.add_argument("--max-boxes", default=_env("QMEDSAM_MAX_BOXES", "auto"),
                    help="boxes per decoder call: a number, or 'auto' to size blocks from the memory "
                         "limit (cgroup or physical) and the image size")
    ap.add_argument("--mode-3d", choices=("fixed", "propagate"), default=_env("QMEDSAM_MODE_3D", "fixed"),
                    help="fixed: each box's xy extent on every slice of its z range (paper); propagate: "
                         "baseline propagation from the middle slice; both encode each slice once")
    ap.add_argument("--threads", type=int, default=int(_env("QMEDSAM_THREADS", "0")),
                    help="OpenVINO inference threads (0: all cores)")
    ap.add_argument("--hint", choices=("LATENCY", "THROUGHPUT"), default="LATENCY",
                    help="OpenVINO performance hint")
    ap.add_argument("--float-ops", choices=("auto", "f32", "bf16"), default="auto",
                    help="precision of the operations the int8 models leave in float: auto (default) lets "
                         "OpenVINO use bf16 on CPUs with native bf16, else f32; --precision fp32 always "
                         "runs in f32 unless bf16 is asked for")
    ap.add_argument("--no-overlap", dest="overlap", action="store_false",
                    help="do not encode the next slice while decoding the current one")
    ap.add_argument("-v", "--verbose", action="store_true", help="report start-up and per-case details")
    ap.add_argument("--overlay", type=Path, default=None,
                    help="also write one PNG montage per case to this folder (off by default)")
    return ap.parse_args(argv)


def _cache_dir(args) -> Path | None:
    if args.cache.lower() == "none":
        return None
    return Path(args.cache) if args.cache else args.outputs / CACHE_NAME


def _error(name: str, reason: str) -> None:
    print(f"qmedsam: {name}: {reason}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.inputs.is_dir():
        _error(str(args.inputs), "inputs folder not found")
        return 2
    try:
        args.outputs.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _error(str(args.outputs), f"cannot create outputs folder ({e.strerror})")
        return 2
    cases = sorted(p for p in args.inputs.glob("*.npz") if p.is_file())
    if not cases:
        print(f"qmedsam: no *.npz cases in {args.inputs}", file=sys.stderr)
    engine = None
    rows, failed = [], 0
    for path in cases:
        t0 = time.perf_counter()
        n_boxes, status, stats = 0, "ok", None
        try:
            case = load_case(path)
            n_boxes = len(case.boxes)
            if engine is None:
                t_models = time.perf_counter()
                engine = _make_engine(args)
                if args.verbose:
                    print(f"qmedsam: models ready in {time.perf_counter() - t_models:.2f} s "
                          f"({'from compile cache' if engine.loaded_from_cache else 'compiled'}; "
                          f"cache: {engine.cache_dir or 'off'})", file=sys.stderr)
            from qmedsam.segment import Options, segment_case

            h, w = case.image.shape[1:3] if case.is_3d else case.image.shape[:2]
            block = auto_block_size(h, w) if args.max_boxes == "auto" else max(1, int(args.max_boxes))
            seg, stats = segment_case(case, engine, Options(max_boxes=block, mode_3d=args.mode_3d,
                                                            overlap=args.overlap))
            save_segs(args.outputs / path.name, seg)
            if args.verbose and engine.first_output_age is not None and rows == []:
                print(f"qmedsam: first encoder output {engine.first_output_age:.2f} s after process start",
                      file=sys.stderr)
            if args.overlay is not None:
                from qmedsam.overlay import case_overlay

                case_overlay(case.image, seg, case.boxes, case.is_3d, args.overlay / f"{path.stem}.png")
        except CaseError as e:
            failed += 1
            status = "error"
            _error(path.name, str(e))
        except Exception as e:  # a fault in one case must not stop the others
            failed += 1
            status = "error"
            _error(path.name, f"{type(e).__name__}: {e}")
        seconds = time.perf_counter() - t0
        rows.append(f"{path.name},{seconds:.3f},{n_boxes},{stats.slices_encoded if stats else 0},"
                    f"{stats.decoder_calls if stats else 0},{peak_rss_bytes() / 2**20:.0f},{status}\n")
        save_text(args.outputs / "efficiency.csv", CSV_HEADER + "".join(rows))
    return 1 if failed else 0


def _make_engine(args):
    from qmedsam.engine import Engine

    models = args.models / "fp32" if args.precision == "fp32" else args.models
    if not (models / "encoder.xml").is_file():
        raise CaseError(f"models not found in {models} (run `make export`"
                        f"{'-fp32' if args.precision == 'fp32' else ''})")
    float_ops = "f32" if args.precision == "fp32" and args.float_ops == "auto" else args.float_ops
    return Engine(models, _cache_dir(args), threads=args.threads, hint=args.hint, float_precision=float_ops)


if __name__ == "__main__":
    sys.exit(main())
