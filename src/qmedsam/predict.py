"""Segment every ``*.npz`` case of an inputs folder into an outputs folder.

Organiser usage (inside the image): ``sh predict.sh`` ==
``python -m qmedsam.predict -i /workspace/inputs -o /workspace/outputs``.
Start-up problems (no inputs folder, unwritable outputs, models missing or not
compilable, bad options) stop the run before the first case with one line on
stderr and exit status 2.  A case that cannot be read or trusted is reported in
one line naming the file and the reason; the other cases still run; the exit
status is then 1.  Each case gets one line on stderr (``-q`` keeps only errors),
and a last line sums up.  Outputs are written atomically.
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import threading
import time
from pathlib import Path

from qmedsam.atomic import save_segs, save_text
from qmedsam.cases import CaseError, is_3d_name, load_case, modality_of, peek_boxes
from qmedsam.encoder_choice import FLOAT_ENCODER, PRECISIONS
from qmedsam.ledger import COLUMNS
from qmedsam.engine import FLOAT_OPS, EngineError, cache_problem, float_ops_for
from qmedsam.memory import peak_rss_bytes
from qmedsam.model_dir import default_models, model_dir
from qmedsam.progress import CaseProgress
from qmedsam.slice_interpolation import DEFAULT_TAU
from qmedsam.zoom import MAX_CROPS

CACHE_NAME = ".qmedsam-cache"


def _env(name: str, default):
    return os.environ.get(name, default)


def max_boxes_option(text: str) -> int | str:
    """'auto' or a positive whole number (argparse type of ``--max-boxes``)."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is neither 'auto' nor a positive whole number")
    return value


def tau_option(text: str) -> float:
    """A number >= 0 (argparse type of ``--interpolate-slices``)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number >= 0")
    return value


def shard_option(text: str) -> tuple[int, int]:
    """'I/N' with 1 <= I <= N (argparse type of ``--shard``)."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        i = n = 0
    if not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"{text!r} is not I/N with 1 <= I <= N")
    return i, n


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="qmedsam.predict", description=__doc__.splitlines()[0])
    ap.add_argument("-i", "--inputs", type=Path, default=Path(_env("QMEDSAM_INPUTS", "/workspace/inputs")),
                    help="folder of input cases (*.npz) [env QMEDSAM_INPUTS, default /workspace/inputs]")
    ap.add_argument("-o", "--outputs", type=Path,
                    default=Path(_env("QMEDSAM_OUTPUTS", "/workspace/outputs")),
                    help="folder for <case>.npz results [env QMEDSAM_OUTPUTS, default /workspace/outputs]")
    ap.add_argument("--models", type=Path, default=default_models(),
                    help="folder with encoder/decoder .xml/.bin (int8); fp32 uses MODELS/fp32 "
                         "[env QMEDSAM_MODELS, default: the package's own models]")
    ap.add_argument("--precision", choices=PRECISIONS, default=_env("QMEDSAM_PRECISION", "auto"),
                    help="auto (default): per case the float encoder, or the int8 one probed by a guard, "
                         "whichever is faster for it on this CPU (qmedsam.policy); int8: the int8 encoder "
                         "unguarded; fp32: the float models in MODELS/fp32 [env QMEDSAM_PRECISION]")
    talk = ap.add_mutually_exclusive_group()
    talk.add_argument("-v", "--verbose", action="store_true",
                      help="also report start-up details and each case's cost ledger")
    talk.add_argument("-q", "--quiet", action="store_true",
                      help="no per-case lines (errors and the closing summary still print)")
    ap.add_argument("--resume", action="store_true",
                    help="skip cases whose output is already in OUTPUTS, written by a run with the same models "
                         "(efficiency.csv's models column); the rest run")
    ap.add_argument("--shard", type=shard_option, metavar="I/N", default=None,
                    help="run only the I-th of N parts of the sorted case list (1-based; e.g. a Slurm array task)")
    ap.add_argument("--overlay", type=Path, default=None,
                    help="also write one PNG montage per case to this folder (off by default)")
    tune = ap.add_argument_group("tuning", "A/B switches and limits; the defaults are what the benchmarks measured best")
    tune.add_argument("--cache", default=_env("QMEDSAM_CACHE", ""),
                    help="OpenVINO compile-cache folder; default OUTPUTS/.qmedsam-cache, which persists "
                         "between organiser runs; 'none' disables caching [env QMEDSAM_CACHE]")
    tune.add_argument("--max-boxes", type=max_boxes_option, default=_env("QMEDSAM_MAX_BOXES", "auto"),
                    help="boxes per decoder call: a number, or 'auto' to size blocks from the memory "
                         "limit (cgroup or physical) and the image size")
    tune.add_argument("--mode-3d", choices=("fixed", "propagate", "guided"), default=_env("QMEDSAM_MODE_3D", "fixed"),
                    help="fixed: each box's xy extent on every slice of its z range (paper); propagate: "
                         "baseline propagation from the middle slice; guided: propagation clipped to the "
                         "box, the fixed box's mask kept unless the decoder predicts the propagated one "
                         "clearly better (scores below fixed on the public cases); all encode each slice once")
    tune.add_argument("--interpolate-slices", type=tau_option, metavar="TAU",
                    default=_env("QMEDSAM_INTERPOLATE_SLICES", str(DEFAULT_TAU)),
                    help="3D fixed mode: encode every other slice of a box's range and give a slice between two "
                         "encoded ones their mean embedding where those differ by less than TAU (relative L2), "
                         f"else encode it too; 0: encode every slice (default {DEFAULT_TAU}) "
                         "[env QMEDSAM_INTERPOLATE_SLICES]")
    tune.add_argument("--zoom", choices=("auto", "off"), default=_env("QMEDSAM_ZOOM", "auto"),
                    help="2D images: decode boxes too small for the 256-pixel model input against crops "
                         "around them (auto, default) or not (off)")
    tune.add_argument("--zoom-crops", type=int, default=int(_env("QMEDSAM_ZOOM_CROPS", str(MAX_CROPS))),
                    help=f"time budget of --zoom auto: at most this many crops per image; sparse crops share "
                         f"an encoder pass, dense ones take one each, about one 3D slice's time "
                         f"(default {MAX_CROPS})")
    tune.add_argument("--threads", type=int, default=int(_env("QMEDSAM_THREADS", "0")),
                    help="OpenVINO inference threads (0: all cores)")
    tune.add_argument("--hint", choices=("LATENCY", "THROUGHPUT"), default="LATENCY",
                    help="OpenVINO performance hint")
    tune.add_argument("--float-ops", choices=FLOAT_OPS, default="auto",
                    help="precision of the operations the int8 models leave in float: auto (default) lets "
                         "OpenVINO use bf16 on CPUs with native bf16, else f32; --precision fp32 always "
                         "runs in f32 unless bf16 is asked for")
    tune.add_argument("--decoder-windows", choices=("on", "off"), default="on",
                    help="on (default): a small box's up-scaling and mask product run only over a window "
                         "around it (qmedsam.decoder_windows); off: over the whole 256x256 grid")
    tune.add_argument("--no-overlap", dest="overlap", action="store_false",
                    help="do not encode the next slice while decoding the current one")
    return ap.parse_args(argv)


def _say(text: str) -> None:
    print(f"qmedsam: {text}", file=sys.stderr, flush=True)


def _cache_dir(args) -> Path | None:
    if args.cache.lower() == "none":
        return None
    path = Path(args.cache) if args.cache else args.outputs / CACHE_NAME
    problem = cache_problem(path)
    if problem:
        _say(f"warning: compile cache {path} not writable ({problem}); running without cache")
        return None
    return path


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


class _EngineWhenReady:
    """The engine, built in a background thread while the first case is read and preprocessed
    (compiling or loading the cached models releases the GIL); the first use waits for it."""

    def __init__(self, build, report=None):
        self._engine, self._error = None, None
        self._report = report
        self.ready_at: float | None = None       # process age when the models were ready
        self.waited = 0.0                         # seconds the cases' thread waited for them

        def run():
            try:
                self._engine = build()
            except BaseException as e:  # re-raised in the thread that uses the engine
                self._error = e
            from qmedsam.proc_clock import process_age

            self.ready_at = process_age()

        self._thread = threading.Thread(target=run, name="qmedsam-models", daemon=True)
        self._thread.start()

    def ready(self):
        if self._thread.is_alive():
            t = time.perf_counter()
            self._thread.join()
            self.waited += time.perf_counter() - t
        if self._error is not None:
            raise self._error
        if self._report is not None:
            self._report(self._engine)
            self._report = None
        return self._engine

    def settle(self) -> None:
        """Wait for the loading thread to end (every case failed before using the models): a
        process, or a test, must not end while OpenVINO is still writing the compile cache."""
        self._thread.join()

    def __getattr__(self, name):
        return getattr(self.ready(), name)


def start(args):
    """Everything checked once before the first case: folders, models, cache; the engine is
    then built in the background.  Returns (cases, engine); raises :class:`EngineError` with a
    one-line reason (the engine's own build errors come at its first use)."""
    if not args.inputs.is_dir():
        raise EngineError(f"{args.inputs}: inputs folder not found")
    try:
        args.outputs.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EngineError(f"{args.outputs}: cannot create outputs folder ({e.strerror})") from None
    if not os.access(args.outputs, os.W_OK):
        raise EngineError(f"{args.outputs}: outputs folder not writable")
    models = model_dir(args.models, args.precision)
    cases = sorted(p for p in args.inputs.glob("*.npz") if p.is_file())
    if args.shard:
        cases = cases[args.shard[0] - 1::args.shard[1]]
    args.models_id = models_id(models)
    args.done = []
    if args.resume:
        cases, args.done = resume_split(cases, args.outputs, args.models_id)
    if not cases:
        return cases, None
    float_ops = float_ops_for(args.precision, args.float_ops)
    # --precision auto plans the first case before any model loads (its boxes only: the image is
    # read while the models load), so that only the graphs it runs load (qmedsam.policy)
    from qmedsam.policy import engine_encoders

    encoder, fallback, why = engine_encoders(models, args.precision, is_3d_name(cases[0].name), peek_boxes(cases[0]),
                                             modality_of(cases[0].name))
    cache = _cache_dir(args)
    t = time.perf_counter()

    def build():
        from qmedsam.engine import Engine, EngineOptions

        return Engine(models, EngineOptions(cache, args.threads, args.hint, float_ops, encoder, fallback,
                                            windows=args.decoder_windows == "on"))

    def report(engine):
        if args.verbose:
            _say(f"models ready {time.perf_counter() - t:.2f} s after start-up checks "
                 f"({'from compile cache' if engine.loaded_from_cache else 'compiled'}; cache: {cache or 'off'}); "
                 f"encoder {why}{'; guarded per case by the float encoder' if fallback else ''}; "
                 f"float leftovers: {float_ops}")

    return cases, _EngineWhenReady(build, report)


def models_id(folder: Path) -> str:
    """A short id of a models folder: the sha256 of its manifest (which records every file's sha256)."""
    import hashlib

    try:
        return hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()[:12]
    except OSError:
        return ""


def resume_split(cases: list[Path], outputs: Path, models: str) -> tuple[list[Path], list[dict]]:
    """(cases still to run, efficiency.csv rows of those already done): a case is done when its
    output is in ``outputs`` (outputs are written by rename: a present file is whole) and its row
    says it ran ok with the same models."""
    try:
        with open(outputs / "efficiency.csv", newline="") as f:
            rows = {r.get("case"): r for r in csv.DictReader(f)}
    except (OSError, csv.Error):
        rows = {}
    todo, done = [], []
    for path in cases:
        row = rows.get(path.name)
        if row and row.get("status") == "ok" and row.get("models") == models and (outputs / path.name).is_file():
            done.append(row)
        else:
            todo.append(path)
    return todo, done


def csv_text(rows: list[dict]) -> str:
    """``efficiency.csv``: one row per case, the cost ledger's columns after the long-standing ones."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _precision_of(args, engine, stats) -> str:
    """'int8' or 'float': the encoder that ran the case (empty where none did)."""
    if stats is None or not stats.encoder_passes:
        return ""
    name = stats.verdict.encoder if stats.verdict else engine.encoder
    return "float" if name == FLOAT_ENCODER or args.precision == "fp32" else "int8"


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    try:
        cases, engine = start(args)
    except EngineError as e:
        _say(str(e))
        return 2
    if args.done:
        _say(f"resume: {_count(len(args.done), 'case', 'cases')} already done with these models, skipped")
    if not cases:
        if not args.done:
            _say(f"no *.npz cases in {args.inputs}")
        return 0
    from qmedsam.api import Segmenter

    segmenter = Segmenter(args.models, args.precision, engine=engine)
    rows: list[dict] = list(args.done)          # a resumed run's csv keeps the cases done before
    failed = 0
    show_progress = not args.quiet and sys.stderr.isatty()     # never in the organisers' logs
    seen_loads: dict[str, float] = {}                             # graph loads already in a ledger
    for path in cases:
        t0 = time.perf_counter()
        n_boxes, status, stats = 0, "ok", None
        read_s = write_s = 0.0
        waited = getattr(engine, "waited", 0.0)
        try:
            case = load_case(path)
            read_s = time.perf_counter() - t0
            n_boxes = len(case.boxes)
            options = segmenter.options(case, mode_3d=args.mode_3d, zoom=args.zoom, zoom_crops=args.zoom_crops,
                                        interpolate_slices=args.interpolate_slices, max_boxes=args.max_boxes,
                                        overlap=args.overlap)
            progress = CaseProgress(path.name) if show_progress else None
            try:
                seg = segmenter.segment_case(case, options, progress)
            finally:
                stats = segmenter.last_stats
                if progress is not None:
                    progress.close()
            if args.verbose and stats.verdict is not None:
                _say(f"{path.name}: encoder {stats.verdict.reason}")
            t_write = time.perf_counter()
            save_segs(args.outputs / path.name, seg)
            write_s = time.perf_counter() - t_write
            if len(rows) == len(args.done) and stats.first_embedding_at is not None:
                from qmedsam.proc_clock import process_age

                age = process_age()
                if age is not None:
                    stats.ledger.first_output_at_s = age - (time.perf_counter() - stats.first_embedding_at)
                    if args.verbose:
                        _say(f"first encoder output {stats.ledger.first_output_at_s:.2f} s after process start")
            if args.overlay is not None:
                from qmedsam.overlay import case_overlay

                case_overlay(case.image, seg, case.boxes, case.is_3d, args.overlay / f"{path.stem}.png")
        except EngineError as e:            # the models could not be loaded: no case can run
            _say(str(e))
            return 2
        except CaseError as e:
            failed += 1
            status = "error"
            _say(f"{path.name}: {e}")
        except Exception as e:  # a fault in one case must not stop the others
            failed += 1
            status = "error"
            _say(f"{path.name}: {type(e).__name__}: {e}")
        seconds = time.perf_counter() - t0
        encoded, crops = (stats.slices_encoded, stats.crops_encoded) if stats else (0, 0)
        if status == "ok" and not args.quiet:
            zoomed = f" + {_count(crops, 'zoom canvas', 'zoom canvases')}" if crops else ""
            between = f" (+ {len(stats.interpolated)} interpolated)" if stats.interpolated else ""
            _say(f"{path.name}: ok, {_count(n_boxes, 'box', 'boxes')}, {_count(encoded, 'slice', 'slices')}{zoomed} "
                 f"encoded{between}, {seconds:.2f} s")
        row = {"case": path.name, "seconds": f"{seconds:.3f}", "boxes": n_boxes, "slices_encoded": encoded,
               "crops_encoded": crops, "decoder_calls": stats.decoder_calls if stats else 0,
               "peak_rss_mb": f"{peak_rss_bytes() / 2**20:.0f}", "precision": _precision_of(args, engine, stats),
               "status": status, "models": args.models_id}
        if stats is not None:
            ledger = stats.ledger
            ledger.read_s, ledger.write_s = read_s, write_s
            ledger.models_wait_s = getattr(engine, "waited", 0.0) - waited
            ledger.ready_at_s = getattr(engine, "ready_at", None) if len(rows) == len(args.done) else None
            ledger.policy = ledger.policy or args.precision
            loads = getattr(engine, "load_seconds", {})
            ledger.loads = {k: v for k, v in loads.items() if k not in seen_loads}
            seen_loads.update(loads)
            row.update(ledger.columns())
            if args.verbose:
                _say(f"{path.name}: ledger: {ledger.line()}")
        rows.append(row)
        save_text(args.outputs / "efficiency.csv", csv_text(rows))
    _say(f"{_count(len(cases), 'case', 'cases')}: {len(cases) - failed} ok, {failed} failed, "
         f"{time.perf_counter() - t_start:.2f} s in all")
    engine.settle()
    return 1 if failed else 0


if __name__ == "__main__":
    # One malloc arena before any worker thread starts (lower peak RSS; see qmedsam.heap).
    from qmedsam.heap import single_arena

    single_arena()
    # The predictor converts no models: skip importing OpenVINO's model converter and its
    # telemetry (~0.1 s of every run's start-up; the image does not ship it at all).
    sys.modules.setdefault("openvino.tools.ovc", None)
    code = main()
    # Every output is written, renamed into place and closed by now.  Skip the interpreter's
    # teardown (unloading OpenVINO's compiled models and plugin: 30-90 ms measured on 2 cores),
    # which the organisers' timing of the whole run counts; not while the models are still being
    # loaded in the background (main waits for them), so no cache file is cut short.
    sys.stdout.flush()
    sys.stderr.flush()
    if threading.active_count() == 1:
        os._exit(code)
    sys.exit(code)
