"""OpenVINO encoder/decoder pair, compiled for CPU with a persistent compile cache."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def usable_cache_dir(path: Path | None) -> Path | None:
    """The cache folder if it can be created and written, else None (with a warning)."""
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
        return path
    except OSError as e:
        print(f"qmedsam: warning: compile cache {path} not writable ({e.strerror}); "
              "running without cache", file=sys.stderr)
        return None


class Engine:
    """Encoder (1,3,256,256)->(1,256,64,64) and decoder (emb, boxes (B,1,4))->(B,1,256,256)."""

    def __init__(self, model_dir: Path, cache_dir: Path | None = None, threads: int = 0,
                 hint: str = "LATENCY", float_precision: str = "f32"):
        """``float_precision``: 'f32', 'bf16', or 'auto' (OpenVINO's default for the CPU:
        bf16 where the CPU has native bf16, else f32) for the operations left in float."""
        import openvino as ov
        import openvino.properties as props
        import openvino.properties.hint as hints

        core = ov.Core()
        self.cache_dir = usable_cache_dir(cache_dir)
        if self.cache_dir is not None:
            core.set_property({props.cache_dir: str(self.cache_dir)})
        config = {hints.performance_mode: getattr(hints.PerformanceMode, hint)}
        if float_precision != "auto":
            config[hints.inference_precision] = float_precision
        if threads:
            config[props.inference_num_threads] = int(threads)
        # paths (not ov.Model objects) let a warm cache skip reading the IR entirely
        self.encoder = core.compile_model(str(model_dir / "encoder.xml"), "CPU", config)
        self.decoder = core.compile_model(str(model_dir / "decoder.xml"), "CPU", config)
        self.loaded_from_cache = all(
            bool(m.get_property(props.loaded_from_cache)) for m in (self.encoder, self.decoder))
        self._enc = [self.encoder.create_infer_request() for _ in range(2)]
        self._dec = self.decoder.create_infer_request()
        self._next = 0
        self.first_output_age: float | None = None   # process age at the first embedding

    def start_encode(self, tensor: np.ndarray):
        """Start encoding asynchronously; returns a handle for :meth:`finish_encode`."""
        req = self._enc[self._next]
        self._next ^= 1
        req.start_async({0: tensor})
        return req

    def finish_encode(self, handle) -> np.ndarray:
        handle.wait()
        out = handle.get_output_tensor(0).data.copy()
        if self.first_output_age is None:
            from qmedsam.proc_clock import process_age

            self.first_output_age = process_age()
        return out

    def encode(self, tensor: np.ndarray) -> np.ndarray:
        return self.finish_encode(self.start_encode(tensor))

    def decode(self, embedding: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Low-res logits (B, 1, 256, 256) for boxes (B, 1, 4) in 256-space."""
        self._dec.infer({0: embedding, 1: np.ascontiguousarray(boxes, dtype=np.float32)})
        return self._dec.get_output_tensor(0).data.copy()
