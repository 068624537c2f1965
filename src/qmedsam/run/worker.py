"""One worker's life over cases: its model loaded once, then one case at a time, each claimed
(qmedsam.run.claims), segmented, written by rename and returned as a :class:`CaseResult` that carries
its own figures (its efficiency.csv row).  Every pool runs its cases through a :class:`CaseWorker`."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from qmedsam.cases.atomic import save_segs
from qmedsam.cases.read import CaseError, load_case, modality_of
from qmedsam.model.folder import EngineError
from qmedsam.run.claims import claimed
from qmedsam.run.config import RunConfig
from qmedsam.run.loading import ModelLoad, first_case
from qmedsam.segment.case_run import segment_case
from qmedsam.system.clock import process_age
from qmedsam.system.memory import peak_rss_bytes


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


class CaseWorker:
    """Cases through one model for the life of a worker (the plain run, a ``--jobs`` process, a Ray
    actor); ``progress``: draw a case's progress on the terminal."""

    def __init__(self, config: RunConfig, worker: int = 0, progress: bool = False):
        self.config, self.worker, self.show_progress = config, worker, progress
        self.load: ModelLoad | None = None
        self.first = True                           # the first case gets the start-up columns
        self.seen_loads: dict[str, float] = {}      # graph loads already in a ledger
        self.reported = False                       # the -v line about the model said
        self.kind = "box"                           # the case being run: box, recist or interactive

    def run(self, path: Path) -> CaseResult:
        config = self.config
        if self.load is None:                       # the models load while the first case is read
            self.load = ModelLoad(config.precision, config.model_settings(), first_case(path))
        with claimed(config.outputs, path.name, config.run_id) as claim:
            if claim is None:
                return CaseResult(path.name, skipped="busy")
            if claim.done is not None:
                return CaseResult(**{**claim.done, "skipped": "retried"})
            claim.clear_partials(config.outputs, path.name)
            t0 = time.perf_counter()
            result, load, ledger = CaseResult(path.name), self.load, None
            waited, status, n_boxes, read_s = load.waited, "ok", 0, 0.0
            self.kind = "box"
            try:
                case = load_case(path)
                read_s, n_boxes, self.kind = time.perf_counter() - t0, len(case.boxes), case.kind
                plan = config.precision.plan(case.is_3d, case.boxes, modality_of(case.name))
                block = config.segment.block_size(case.image.shape[1:3] if case.is_3d else case.image.shape[:2],
                                                  config.memory)
                model = self._model(result)
                progress = self._progress(path)
                cache = self._embedding_cache(case)
                try:
                    seg, ledger = segment_case(case, model, plan, config.segment, block, progress, cache)
                finally:
                    if progress is not None:
                        progress.close()
                    if cache is not None:
                        cache.trim()
                self._finish(path, case, seg, ledger, result)
            except EngineError as e:            # the models could not be loaded: no case can run
                result.fatal = str(e)
                return result
            except CaseError as e:
                status = "error"
                result.lines.append(f"{path.name}: {e}")
            except Exception as e:  # a fault in one case must not stop the others
                status = "error"
                result.lines.append(f"{path.name}: {type(e).__name__}: {e}")
            self._record(path, result, ledger, status, n_boxes, time.perf_counter() - t0, read_s,
                         load.waited - waited)
            claim.finish(asdict(result))
            return result

    def _model(self, result: CaseResult):
        """The loaded model (waiting for it); the first time, the ``-v`` line about it."""
        model = self.load.ready()
        if self.config.verbose and not self.reported:
            self.reported = True
            c = self.config
            result.lines.append(
                f"models ready {time.perf_counter() - self.load.started:.2f} s after start-up checks "
                f"({'from compile cache' if model.loaded_from_cache else 'compiled'}; cache: {c.cache_dir or 'off'}); "
                f"encoder {self.load.why}; float leftovers: {c.precision.float_ops}")
        return model

    def _embedding_cache(self, case):
        """Interactive rounds keep their slices' embeddings beside the compile cache for the next
        round's process; keyed by the models, not the encoder: a slice the guard let run in int8 is
        as good to a later round of the same case as a float one."""
        if case.kind != "interactive" or self.config.cache_dir is None:
            return None
        from qmedsam.segment.embedding_cache import FOLDER, EmbeddingCache

        return EmbeddingCache(self.config.cache_dir / FOLDER, self.config.models_id)

    def _progress(self, path: Path):
        if not self.show_progress:
            return None
        from qmedsam.run.progress import CaseProgress

        return CaseProgress(path.name)

    def _finish(self, path: Path, case, seg, ledger, result: CaseResult) -> None:
        """Write the label map (and overlay); the first case's first encoder output in the ledger."""
        config = self.config
        if config.verbose and ledger.verdict is not None:
            result.lines.append(f"{path.name}: encoder {ledger.verdict.reason}")
        with ledger.timing("write_s"):
            save_segs(config.outputs / path.name, seg)
        if self.first and ledger.first_embedding_at is not None:
            age = process_age()
            if age is not None:
                ledger.first_output_at_s = age - (time.perf_counter() - ledger.first_embedding_at)
                if config.verbose:
                    result.lines.append(f"first encoder output {ledger.first_output_at_s:.2f} s after process start")
        if config.overlay is not None:
            from qmedsam.cases.overlay import case_overlay

            case_overlay(case.image, seg, case.boxes, case.is_3d, config.overlay / f"{path.stem}.png")

    def _record(self, path: Path, result: CaseResult, ledger, status: str, n_boxes: int, seconds: float,
                read_s: float, waited: float) -> None:
        """The case's line and its efficiency.csv row, into ``result``."""
        config = self.config
        encoded, crops = (ledger.slices_encoded, ledger.crops_encoded) if ledger else (0, 0)
        if status == "ok" and not config.quiet:
            zoomed = f" + {count(crops, 'zoom canvas', 'zoom canvases')}" if crops else ""
            between = f" (+ {len(ledger.interpolated)} interpolated)" if ledger.interpolated else ""
            cached = f", {ledger.cached} from the embeddings cache" if ledger.cached else ""
            what = count(n_boxes, "box", "boxes") if self.kind == "box" else count(n_boxes, f"{self.kind} object",
                                                                                   f"{self.kind} objects")
            result.lines.append(f"{path.name}: ok, {what}, "
                                f"{count(encoded, 'slice', 'slices')}{zoomed} encoded{between}{cached}, {seconds:.2f} s")
            if config.verbose and ledger.notes:
                result.lines.append(f"{path.name}: clicks: {'; '.join(ledger.notes)}")
        kind = config.precision.kind(ledger.encoder) if ledger and ledger.passes else ""
        row = {"case": path.name, "seconds": f"{seconds:.3f}", "boxes": n_boxes, "slices_encoded": encoded,
               "crops_encoded": crops, "decoder_calls": ledger.decoder_calls if ledger else 0,
               "peak_rss_mb": f"{peak_rss_bytes() / 2**20:.0f}", "precision": kind,
               "status": status, "models": config.models_id, "worker": self.worker}
        if ledger is not None:
            ledger.read_s, ledger.models_wait_s = read_s, waited
            ledger.ready_at_s = self.load.ready_at if self.first else None
            loads = self.load.model.load_seconds
            ledger.loads = {k: v for k, v in loads.items() if k not in self.seen_loads}
            self.seen_loads.update(loads)
            row.update(ledger.columns())
            if config.verbose:
                result.lines.append(f"{path.name}: ledger: {ledger.line()}")
        self.first = False
        result.row, result.failed = row, status != "ok"

    def settle(self) -> None:
        if self.load is not None:
            self.load.settle()
