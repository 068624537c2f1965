"""The command line's start-up checks, once before the first case: folders, models, cache; then the
run's frozen configuration."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from qmedsam.model.cache import cache_problem
from qmedsam.model.folder import EngineError, models_id
from qmedsam.precision.setting import Precision
from qmedsam.run.config import CACHE_NAME, RunConfig
from qmedsam.run.record import resume_split
from qmedsam.segment.options import SegmentOptions


def _cache_dir(args) -> Path | None:
    if args.cache.lower() == "none":
        return None
    path = Path(args.cache) if args.cache else args.outputs / CACHE_NAME
    problem = cache_problem(path)
    if problem:
        print(f"qmedsam: warning: compile cache {path} not writable ({problem}); running without cache",
              file=sys.stderr, flush=True)
        return None
    return path


def configure(args) -> tuple[RunConfig, list[Path], list[Path], list[dict]]:
    """(the run's configuration, the cases to run, every case of the inputs folder, efficiency.csv
    rows of the cases --resume skips); raises :class:`EngineError` with a one-line reason."""
    if not args.inputs.is_dir():
        raise EngineError(f"{args.inputs}: inputs folder not found")
    try:
        args.outputs.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EngineError(f"{args.outputs}: cannot create outputs folder ({e.strerror})") from None
    if not os.access(args.outputs, os.W_OK):
        raise EngineError(f"{args.outputs}: outputs folder not writable")
    precision = Precision.resolve(args.precision, args.models, args.float_ops)
    models = models_id(precision.folder)
    everything = sorted(p for p in args.inputs.glob("*.npz") if p.is_file())
    cases = everything[args.shard[0] - 1::args.shard[1]] if args.shard else everything
    done: list[dict] = []
    if args.resume:
        cases, done = resume_split(cases, args.outputs, models)
    segment = SegmentOptions(mode_3d=args.mode_3d, zoom_crops=args.zoom_crops if args.zoom == "auto" else 0,
                             interpolate=args.interpolate_slices, max_boxes=args.max_boxes, overlap=args.overlap)
    config = RunConfig(args.inputs, args.outputs, precision, segment, _cache_dir(args) if cases else None,
                       args.threads, args.hint, args.decoder_windows == "on", overlay=args.overlay,
                       verbose=args.verbose, quiet=args.quiet, models_id=models, run_id=os.urandom(6).hex(),
                       jobs=args.jobs, ray=args.ray)
    return config, cases, everything, done
