"""The one model loader: the command line, the API, ``--jobs`` workers and Ray actors load through it."""
from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

from qmedsam.model.model import Model, ModelSettings
from qmedsam.precision.setting import Precision


def load_model(precision: Precision, settings: ModelSettings, first: tuple = (False, None, "")) -> tuple[Model, str]:
    """The model ``precision`` runs, with only the graphs its first case runs (``first``: is_3d,
    raw boxes, modality; a 2D image unless told); later cases load more on first use.  Returns
    (model, why that encoder)."""
    encoder, also, why = precision.first_graphs(*first)
    settings = replace(settings, float_ops=precision.float_ops, encoder=encoder, also=also)
    return Model(precision.folder, settings), why + ("; guarded per case by the float encoder" if also else "")


class ModelLoad:
    """A model loading in a background thread while the first case is read (compiling or loading
    cached graphs releases the GIL); :meth:`ready` waits for it."""

    def __init__(self, precision: Precision, settings: ModelSettings, first: tuple):
        self.model: Model | None = None
        self.why = ""
        self.error: BaseException | None = None
        self.ready_at: float | None = None       # process age when the model was ready
        self.waited = 0.0                         # seconds the cases' thread waited for it
        self.started = time.perf_counter()

        def run():
            try:
                self.model, self.why = load_model(precision, settings, first)
            except BaseException as e:  # re-raised in the thread that uses the model
                self.error = e
            from qmedsam.system.clock import process_age

            self.ready_at = process_age()

        self._thread = threading.Thread(target=run, name="qmedsam-models", daemon=True)
        self._thread.start()

    def ready(self) -> Model:
        if self._thread.is_alive():
            t = time.perf_counter()
            self._thread.join()
            self.waited += time.perf_counter() - t
        if self.error is not None:
            raise self.error
        return self.model

    def settle(self) -> None:
        """Wait for the loading thread to end: a process must not end while OpenVINO still writes
        the compile cache (every case failed before using the model)."""
        self._thread.join()


def first_case(path: Path) -> tuple:
    """(is_3d, raw boxes, modality) of a case file, its image unread: enough to plan its graphs."""
    from qmedsam.cases.read import is_3d_name, modality_of, peek_boxes

    return is_3d_name(path.name), peek_boxes(path), modality_of(path.name)
