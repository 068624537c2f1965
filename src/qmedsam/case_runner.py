"""One worker's life over cases: its models loaded once, then one case at a time, each claimed
(qmedsam.claims), segmented, written by rename, and returned as a :class:`CaseResult`.

The plain run, each ``--jobs`` process and each Ray actor run cases through a :class:`CaseRunner`;
the process that hands the cases out prints the results' lines and keeps ``efficiency.csv``.
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from qmedsam.atomic import save_segs
from qmedsam.cases import CaseError, is_3d_name, load_case, modality_of, peek_boxes
from qmedsam.claims import claimed
from qmedsam.encoder_choice import FLOAT_ENCODER
from qmedsam.engine import EngineError, float_ops_for
from qmedsam.memory import peak_rss_bytes


@dataclass
class CaseResult:
    case: str
    row: dict = field(default_factory=dict)          # the case's efficiency.csv row
    lines: list[str] = field(default_factory=list)   # what the command line says of it, in order
    failed: bool = False
    fatal: str = ""        # the models could not load: no case can run (exit status 2)
    skipped: str = ""      # 'busy': another process holds the case; 'retried': this run wrote it before


def count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


class EngineWhenReady:
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


def start_engine(args, models: Path, first: Path, say) -> EngineWhenReady:
    """Load the models in the background for a worker whose first case is ``first``: with
    ``--precision auto`` only the graphs that case runs (planned from its boxes alone, before the
    image is read: qmedsam.policy); ``say`` gets the ``-v`` line once they are ready."""
    from qmedsam.policy import engine_encoders

    float_ops = float_ops_for(args.precision, args.float_ops)
    encoder, fallback, why = engine_encoders(models, args.precision, is_3d_name(first.name), peek_boxes(first),
                                             modality_of(first.name))
    t = time.perf_counter()

    def build():
        from qmedsam.engine import Engine, EngineOptions

        return Engine(models, EngineOptions(args.cache_dir, args.threads, args.hint, float_ops, encoder, fallback,
                                            windows=args.decoder_windows == "on",
                                            pin_threads=getattr(args, "pin_threads", True)))

    def report(engine):
        if args.verbose:
            say(f"models ready {time.perf_counter() - t:.2f} s after start-up checks "
                f"({'from compile cache' if engine.loaded_from_cache else 'compiled'}; cache: {args.cache_dir or 'off'}); "
                f"encoder {why}{'; guarded per case by the float encoder' if fallback else ''}; "
                f"float leftovers: {float_ops}")

    return EngineWhenReady(build, report)


class CaseRunner:
    """Cases through one Segmenter for the life of a worker.  ``args`` are the command line's
    (with ``models_dir``, ``models_id``, ``cache_dir`` and ``run_id`` set by its start-up checks);
    ``memory`` the bytes this worker may use (None: the process's limit)."""

    def __init__(self, args, engine=None, worker: int = 0, memory: int | None = None, progress: bool = False):
        self.args, self.engine, self.worker, self.memory = args, engine, worker, memory
        self.show_progress = progress
        self.segmenter = None
        self.first = True                           # the first case gets the start-up columns
        self.seen_loads: dict[str, float] = {}      # graph loads already in a ledger
        self._said: list[str] = []

    def _say(self, text: str) -> None:
        self._said.append(text)

    def run(self, path: Path) -> CaseResult:
        with claimed(self.args.outputs, path.name, self.args.run_id) as claim:
            if claim is None:
                return CaseResult(path.name, skipped="busy")
            if claim.done is not None:
                return CaseResult(**{**claim.done, "skipped": "retried"})
            claim.clear_partials(self.args.outputs, path.name)
            result = self._segment(path)
            if not result.fatal:
                claim.finish(asdict(result))
            return result

    def _ensure_segmenter(self, path: Path):
        if self.segmenter is None:
            from qmedsam.api import Segmenter

            if self.engine is None:
                self.engine = start_engine(self.args, self.args.models_dir, path, self._say)
            self.segmenter = Segmenter(self.args.models, self.args.precision, engine=self.engine,
                                       memory=self.memory)
        return self.segmenter

    def _segment(self, path: Path) -> CaseResult:
        args = self.args
        t0 = time.perf_counter()
        result = CaseResult(path.name)
        self._said = result.lines
        segmenter = self._ensure_segmenter(path)
        engine = self.engine
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
            progress = None
            if self.show_progress:
                from qmedsam.progress import CaseProgress

                progress = CaseProgress(path.name)
            try:
                seg = segmenter.segment_case(case, options, progress)
            finally:
                stats = segmenter.last_stats
                if progress is not None:
                    progress.close()
            if args.verbose and stats.verdict is not None:
                self._say(f"{path.name}: encoder {stats.verdict.reason}")
            t_write = time.perf_counter()
            save_segs(args.outputs / path.name, seg)
            write_s = time.perf_counter() - t_write
            if self.first and stats.first_embedding_at is not None:
                from qmedsam.proc_clock import process_age

                age = process_age()
                if age is not None:
                    stats.ledger.first_output_at_s = age - (time.perf_counter() - stats.first_embedding_at)
                    if args.verbose:
                        self._say(f"first encoder output {stats.ledger.first_output_at_s:.2f} s after process start")
            if args.overlay is not None:
                from qmedsam.overlay import case_overlay

                case_overlay(case.image, seg, case.boxes, case.is_3d, args.overlay / f"{path.stem}.png")
        except EngineError as e:            # the models could not be loaded: no case can run
            result.fatal = str(e)
            return result
        except CaseError as e:
            status = "error"
            self._say(f"{path.name}: {e}")
        except Exception as e:  # a fault in one case must not stop the others
            status = "error"
            self._say(f"{path.name}: {type(e).__name__}: {e}")
        seconds = time.perf_counter() - t0
        encoded, crops = (stats.slices_encoded, stats.crops_encoded) if stats else (0, 0)
        if status == "ok" and not args.quiet:
            zoomed = f" + {count(crops, 'zoom canvas', 'zoom canvases')}" if crops else ""
            between = f" (+ {len(stats.interpolated)} interpolated)" if stats.interpolated else ""
            self._say(f"{path.name}: ok, {count(n_boxes, 'box', 'boxes')}, {count(encoded, 'slice', 'slices')}{zoomed} "
                      f"encoded{between}, {seconds:.2f} s")
        row = {"case": path.name, "seconds": f"{seconds:.3f}", "boxes": n_boxes, "slices_encoded": encoded,
               "crops_encoded": crops, "decoder_calls": stats.decoder_calls if stats else 0,
               "peak_rss_mb": f"{peak_rss_bytes() / 2**20:.0f}", "precision": self._precision(stats),
               "status": status, "models": args.models_id, "worker": self.worker}
        if stats is not None:
            ledger = stats.ledger
            ledger.read_s, ledger.write_s = read_s, write_s
            ledger.models_wait_s = getattr(engine, "waited", 0.0) - waited
            ledger.ready_at_s = getattr(engine, "ready_at", None) if self.first else None
            ledger.policy = ledger.policy or args.precision
            loads = getattr(engine, "load_seconds", {})
            ledger.loads = {k: v for k, v in loads.items() if k not in self.seen_loads}
            self.seen_loads.update(loads)
            row.update(ledger.columns())
            if args.verbose:
                self._say(f"{path.name}: ledger: {ledger.line()}")
        self.first = False
        result.row, result.failed = row, status != "ok"
        return result

    def _precision(self, stats) -> str:
        """'int8' or 'float': the encoder that ran the case (empty where none did)."""
        if stats is None or not stats.encoder_passes:
            return ""
        name = stats.verdict.encoder if stats.verdict else self.engine.encoder
        return "float" if name == FLOAT_ENCODER or self.args.precision == "fp32" else "int8"

    def settle(self) -> None:
        if self.engine is not None and hasattr(type(self.engine), "settle"):
            self.engine.settle()
