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
import os
import sys
import threading
import time
from pathlib import Path

from qmedsam.case_runner import CaseRunner, count
from qmedsam.claims import release, remove_folder
from qmedsam.encoder_choice import PRECISIONS
from qmedsam.engine import FLOAT_OPS, EngineError, cache_problem
from qmedsam.model_dir import default_models, model_dir
from qmedsam.run_record import RunRecord, models_id, resume_split
from qmedsam.slice_interpolation import DEFAULT_TAU
from qmedsam.zoom import MAX_CROPS

CACHE_NAME = ".qmedsam-cache"


def _env(name: str, default):
    return os.environ.get(name, default)


def max_boxes_option(text: str) -> int | str:
    """'auto' or a positive whole number (argparse type of ``--max-boxes`` and ``--jobs``)."""
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


# --jobs takes what --max-boxes takes: 'auto' or a positive whole number
jobs_option = max_boxes_option


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
    ap.add_argument("--jobs", type=jobs_option, metavar="N", default=None,
                    help="N worker processes (or 'auto': one per core the process may use), each with its own "
                         "models and cores, largest cases first; without it one process runs the cases in order")
    ap.add_argument("--ray", metavar="ADDRESS", default=None,
                    help="run the cases on a Ray cluster (host:port of its head, or 'auto': the local one, "
                         "started if none runs) as actors of --threads cores each (default 1), --jobs of them "
                         "(default: as many as the cluster's CPUs hold); inputs and outputs must be paths every "
                         "node sees; needs the cluster extra")
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


def start(args) -> tuple[list[Path], list[Path]]:
    """Everything checked once before the first case: folders, models, cache.  Returns (the cases
    to run, every case of the inputs folder); raises :class:`EngineError` with a one-line reason."""
    if not args.inputs.is_dir():
        raise EngineError(f"{args.inputs}: inputs folder not found")
    try:
        args.outputs.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EngineError(f"{args.outputs}: cannot create outputs folder ({e.strerror})") from None
    if not os.access(args.outputs, os.W_OK):
        raise EngineError(f"{args.outputs}: outputs folder not writable")
    args.models_dir = model_dir(args.models, args.precision)
    args.models_id = models_id(args.models_dir)
    args.run_id = os.urandom(6).hex()          # tells this run's retries from other runs (qmedsam.claims)
    everything = sorted(p for p in args.inputs.glob("*.npz") if p.is_file())
    cases = everything[args.shard[0] - 1::args.shard[1]] if args.shard else everything
    args.done = []
    if args.resume:
        cases, args.done = resume_split(cases, args.outputs, args.models_id)
    args.cache_dir = _cache_dir(args) if cases else None
    return cases, everything


class Tally:
    """What the process that hands out the cases does with each result: print its lines, keep its
    row in efficiency.csv, count it."""

    def __init__(self, args, everything: list[Path]):
        self.args, self.record = args, RunRecord(args.outputs, everything)
        self.ok = self.failed = self.busy = 0

    def __call__(self, result) -> None:
        for line in result.lines:
            _say(line)
        if result.skipped == "busy":
            self.busy += 1
            if not self.args.quiet:
                _say(f"{result.case}: being run by another process on {self.args.outputs}, skipped")
            return
        release(self.args.outputs, result.case)
        if result.fatal:
            return
        self.failed += result.failed
        self.ok += not result.failed
        # a case whose worker was lost has no row of its own: one that says it failed
        self.record.add(result.row or {"case": result.case, "status": "error", "models": self.args.models_id})

    def summary(self, n: int, seconds: float) -> str:
        busy = f", {self.busy} left to another run" if self.busy else ""
        return f"{count(n, 'case', 'cases')}: {self.ok} ok, {self.failed} failed{busy}, {seconds:.2f} s in all"


def _run_here(args, cases: list[Path], tally: Tally) -> str:
    """The plain run: the cases one after another in this process (the organisers' way).  Returns the
    fatal start-up error ('' if none)."""
    from qmedsam.case_runner import start_engine

    engine = start_engine(args, args.models_dir, cases[0], _say)
    runner = CaseRunner(args, engine=engine, progress=not args.quiet and sys.stderr.isatty())
    try:
        for path in cases:
            result = runner.run(path)
            tally(result)
            if result.fatal:
                return result.fatal
    finally:
        runner.settle()
    return ""


def _runner(name: str):
    """A case runner an installed extra registers (entry point group ``qmedsam.runners``; the
    cluster extra registers ``ray``): the runtime never names packages it does not ship."""
    from importlib.metadata import entry_points

    found = entry_points(group="qmedsam.runners", name=name)
    if not found:
        raise EngineError(f"--{name} needs the cluster extra (pip install 'qmedsam[cluster]')")
    try:
        return next(iter(found)).load()
    except ImportError as e:
        raise EngineError(f"--{name} needs the cluster extra (pip install 'qmedsam[cluster]'): {e}") from None


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    try:
        cases, everything = start(args)
    except EngineError as e:
        _say(str(e))
        return 2
    if args.done:
        _say(f"resume: {count(len(args.done), 'case', 'cases')} already done with these models, skipped")
    if not cases:
        if not args.done:
            _say(f"no *.npz cases in {args.inputs}")
        return 0
    tally = Tally(args, everything)
    try:
        if args.ray:
            fatal = _runner("ray")(args, cases, tally)
        elif args.jobs is not None:
            from qmedsam.memory import memory_limit
            from qmedsam.workers import run_jobs, usable_cores, worker_count

            workers = worker_count(args.jobs, args.threads, usable_cores(), memory_limit())
            if args.verbose:
                _say(f"{count(workers, 'worker process', 'worker processes')} over {usable_cores()} cores")
            fatal = run_jobs(args, cases, workers, tally, say=_say)
        else:
            fatal = _run_here(args, cases, tally)
    except EngineError as e:                 # a cluster that cannot be reached
        _say(str(e))
        return 2
    finally:
        tally.record.write()
        remove_folder(args.outputs)
    if fatal:
        _say(fatal)
        return 2
    _say(tally.summary(len(cases), time.perf_counter() - t_start))
    return 1 if tally.failed else 0


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
