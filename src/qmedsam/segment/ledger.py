"""A case's figures: the work it did and where its seconds went, filled as the work happens.

Its ``efficiency.csv`` columns and its ``-v`` line come from here; benchmarks read the columns,
never the log's wording.  Seconds are wall time of the predictor's own thread, except
``encoder_s``, OpenVINO's own time of each encoder pass (passes overlap the decoding of the
previous slice, so their wall share is smaller).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

# efficiency.csv's columns, in order: the long-standing ones, then the ledger's, then the models
# folder's id (--resume tells an older run's outputs by it) and the worker that ran the case
BASE_COLUMNS = ("case", "seconds", "boxes", "slices_encoded", "crops_encoded", "decoder_calls", "peak_rss_mb",
                "precision", "status")
LEDGER_COLUMNS = ("policy", "ready_at_s", "first_output_at_s", "models_wait_s", "graph_loads", "read_s", "probe_s",
                  "probe_slices", "encoder_passes", "encoder_s", "decode_s", "write_s", "reason")
COLUMNS = BASE_COLUMNS + LEDGER_COLUMNS + ("models", "worker")


@dataclass
class Ledger:
    policy: str = ""                 # float, int8+guard, int8 or fp32: the plan the case started with
    reason: str = ""                 # why that plan (and the guard's verdict, if it ran)
    encoder: str = ""                # the encoder graph that ran the case
    verdict: object = None           # the guard's verdict (qmedsam.precision.guard.Verdict), if it ran
    ready_at_s: float | None = None  # process start -> the models this case needed were ready
    first_output_at_s: float | None = None   # process start -> the case's first encoder output
    models_wait_s: float = 0.0       # the case's wait for models still loading
    loads: dict[str, float] = field(default_factory=dict)     # graph -> seconds to load, while this case ran
    read_s: float = 0.0
    probe_s: float = 0.0
    probe_slices: int = 0
    encoder_passes: dict[str, int] = field(default_factory=dict)   # encoder graph -> passes
    encoder_s: float = 0.0
    decode_s: float = 0.0
    write_s: float = 0.0
    # the work, as it goes on (progress reads it)
    decoder_calls: int = 0
    boxes_decoded: int = 0
    encoded: list[int] = field(default_factory=list)      # slice indices, in encoding order
    crops_encoded: int = 0                                # 2D zoom canvases (encoder passes)
    interpolated: list[int] = field(default_factory=list)  # slices given their neighbours' mean embedding
    planned: int = 0                                      # encoder passes the case will take (0: unknown)
    notes: list[str] = field(default_factory=list)        # what each click of an interactive round did
    cached: int = 0                                       # slice embeddings taken from the embeddings cache
    first_embedding_at: float | None = None               # time.perf_counter() of the first embedding
    progress: Callable[["Ledger"], None] | None = None    # told as the work goes on (qmedsam.run.progress)

    def tick(self) -> None:
        if self.progress is not None:
            self.progress(self)

    def count_pass(self, graph: str, seconds: float) -> None:
        """One encoder pass of ``graph`` that took OpenVINO ``seconds``."""
        self.encoder_passes[graph] = self.encoder_passes.get(graph, 0) + 1
        self.encoder_s += seconds

    def note_embedding(self) -> None:
        if self.first_embedding_at is None:
            self.first_embedding_at = time.perf_counter()

    def note_encoded(self, z: int) -> None:
        self.note_embedding()
        self.encoded.append(z)
        self.tick()

    @property
    def slices_encoded(self) -> int:
        return len(self.encoded)

    @property
    def passes(self) -> int:
        """Encoder passes of the case's own images (slices and zoom canvases; probes aside)."""
        return len(self.encoded) + self.crops_encoded

    @property
    def images_done(self) -> int:
        """Images with an embedding so far: encoder passes and interpolated slices."""
        return self.passes + len(self.interpolated)

    @contextmanager
    def timing(self, name: str):
        """Add the wall seconds of the ``with`` block to field ``name``."""
        t = time.perf_counter()
        try:
            yield
        finally:
            setattr(self, name, getattr(self, name) + time.perf_counter() - t)

    def columns(self) -> dict[str, str]:
        """The ledger's ``efficiency.csv`` cells."""
        return {"policy": self.policy,
                "ready_at_s": "" if self.ready_at_s is None else f"{self.ready_at_s:.3f}",
                "first_output_at_s": "" if self.first_output_at_s is None else f"{self.first_output_at_s:.3f}",
                "models_wait_s": f"{self.models_wait_s:.3f}",
                "graph_loads": " ".join(f"{k}={v:.3f}" for k, v in self.loads.items()),
                "read_s": f"{self.read_s:.3f}", "probe_s": f"{self.probe_s:.3f}",
                "probe_slices": str(self.probe_slices),
                "encoder_passes": " ".join(f"{k}={v}" for k, v in self.encoder_passes.items()),
                "encoder_s": f"{self.encoder_s:.3f}", "decode_s": f"{self.decode_s:.3f}",
                "write_s": f"{self.write_s:.3f}", "reason": self.reason}

    def line(self) -> str:
        """The ``-v`` summary of the ledger."""
        c = self.columns()
        ready = f"models ready {c['ready_at_s']} s after process start, " if c["ready_at_s"] else ""
        loads = f"loaded {c['graph_loads']}, " if self.loads else ""
        probe = f"probes {c['probe_slices']} slices {c['probe_s']} s, " if self.probe_slices else ""
        return (f"{self.policy}: {ready}waited {c['models_wait_s']} s for models, {loads}read {c['read_s']} s, "
                f"{probe}encoder {c['encoder_passes'] or 'no'} passes {c['encoder_s']} s, decoding "
                f"{c['decode_s']} s, writing {c['write_s']} s")
