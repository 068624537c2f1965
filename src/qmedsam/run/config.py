"""A run's configuration, frozen once the start-up checks pass; workers get copies with their share."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from qmedsam.model.model import ModelSettings
from qmedsam.precision.setting import Precision
from qmedsam.segment.options import SegmentOptions

CACHE_NAME = ".qmedsam-cache"       # under the outputs folder, which persists between organiser runs


@dataclass(frozen=True)
class RunConfig:
    inputs: Path
    outputs: Path
    precision: Precision
    segment: SegmentOptions = SegmentOptions()
    cache_dir: Path | None = None
    threads: int = 0                  # OpenVINO inference threads (0: all cores)
    hint: str = "LATENCY"
    windows: bool = True              # the decoder's per-box windows (qmedsam.model.windows)
    pin_threads: bool = True
    overlay: Path | None = None
    verbose: bool = False
    quiet: bool = False
    models_id: str = ""               # the models folder's id (efficiency.csv, --resume)
    run_id: str = ""                  # tells this run's retries from other runs' (qmedsam.run.claims)
    memory: int | None = None         # bytes one worker may use (None: the process's limit)
    jobs: int | str | None = None     # --jobs
    ray: str | None = None            # --ray

    def model_settings(self) -> ModelSettings:
        """How this run compiles its graphs (which encoders: qmedsam.run.loading.load_model)."""
        return ModelSettings(self.cache_dir, self.threads, self.hint, windows=self.windows, pin_threads=self.pin_threads)

    def worker(self, threads: int, memory: int, pin_threads: bool = True) -> "RunConfig":
        """This configuration for one worker of a pool: its cores and its share of the memory."""
        return replace(self, threads=threads, memory=memory, pin_threads=pin_threads)

    def resolved(self) -> "RunConfig":
        """Every folder as an absolute path (a Ray actor's working folder differs)."""
        def absolute(p):
            return None if p is None else p.resolve()

        return replace(self, inputs=absolute(self.inputs), outputs=absolute(self.outputs),
                       cache_dir=absolute(self.cache_dir), overlay=absolute(self.overlay),
                       precision=replace(self.precision, folder=absolute(self.precision.folder)))
