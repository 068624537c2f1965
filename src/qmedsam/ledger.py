"""A case's cost ledger: where its seconds went, as ``efficiency.csv`` columns and one ``-v`` line.

Benchmarks read these columns, never the log's wording.  Seconds are wall time of the predictor's
own thread, except ``encoder_s``, OpenVINO's own time of each encoder pass (passes overlap the
decoding of the previous slice, so their wall share is smaller).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

# efficiency.csv's columns, in order: the long-standing ones, then the ledger's
BASE_COLUMNS = ("case", "seconds", "boxes", "slices_encoded", "crops_encoded", "decoder_calls", "peak_rss_mb",
                "precision", "status")
LEDGER_COLUMNS = ("policy", "ready_at_s", "first_output_at_s", "models_wait_s", "graph_loads", "read_s", "probe_s", "probe_slices",
                  "encoder_passes", "encoder_s", "decode_s", "write_s", "reason")
# the models folder's id (sha256 of its manifest), by which --resume tells an older run's outputs apart,
# and the worker (0 in a plain run; --jobs process or Ray actor number) that ran the case
COLUMNS = BASE_COLUMNS + LEDGER_COLUMNS + ("models", "worker")


@dataclass
class Ledger:
    policy: str = ""                 # float, int8+guard, int8 or fp32: the plan the case started with
    reason: str = ""                 # why that plan (and the guard's verdict, if it ran)
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
