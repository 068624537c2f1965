"""OpenVINO encoder and decoder, compiled for CPU with a persistent compile cache.

The decoder runs as two graphs: ``decoder_image`` once per image (the work every box of
it shares) and ``decoder_boxes`` per block of boxes; see
``training/model/factored_decoder.py``.  Inputs and outputs are bound by the tensor names
``make export`` gives the graphs (the ``*_IO`` constants; ``training/export.py`` imports
them from here).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ENCODER_IO = (("image",), ("image_embedding",))
# The per-image decoder state: one tensor per part (training/model/factored_decoder.py), handed
# from the per-image graph to the per-box graph without a copy.
DECODER_STATE = tuple(f"state_{p}" for p in ("k1", "q1", "v1", "g0", "kb2", "vb2", "qb2", "h1", "w2",
                                              "kb3", "vb3", "tb", "cols"))
DECODER_IMAGE_IO = (("image_embedding",), DECODER_STATE)
DECODER_BOXES_IO = ((*DECODER_STATE, "boxes"), ("low_res_masks", "iou_predictions"))
GRAPHS = ("encoder", "decoder_image", "decoder_boxes")                 # what the runtime loads
# The encoder graph may come from another file of the folder: ``encoder_float`` (see
# :mod:`qmedsam.encoder_choice`); it has the same inputs and outputs.
FLOAT_OPS = ("auto", "f32", "bf16")


class EngineError(RuntimeError):
    """The models cannot be loaded or compiled; the message is one line."""


def float_ops_for(precision: str, requested: str = "auto") -> str:
    """Precision of the operations the models leave in float.

    ``auto`` lets OpenVINO choose for int8 models (bf16 on CPUs with native bf16, else f32)
    but keeps the float models in f32, so that 'fp32' means f32 arithmetic."""
    if requested not in FLOAT_OPS:
        raise ValueError(f"float ops {requested!r} not in {FLOAT_OPS}")
    return "f32" if precision == "fp32" and requested == "auto" else requested


def cache_problem(path: Path) -> str | None:
    """None when ``path`` can hold the compile cache (created if need be), else the reason."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return None
    except OSError as e:
        return e.strerror or str(e)


def _check_names(model, kind: str, io: tuple[tuple[str, ...], tuple[str, ...]]) -> None:
    have = ({n for p in model.inputs for n in p.get_names()}, {n for p in model.outputs for n in p.get_names()})
    for side, want, got in (("input", io[0], have[0]), ("output", io[1], have[1])):
        missing = [n for n in want if n not in got]
        if missing:
            raise EngineError(f"{kind} model has no {side} named {', '.join(missing)} "
                              f"(has {', '.join(sorted(got)) or 'none'}): re-export it with `make export`")


def _tensor(array: np.ndarray):
    import openvino as ov

    return ov.Tensor(array)


class Engine:
    """Encoder: image (1,3,256,256) -> image_embedding (1,256,64,64).  Decoder:
    :meth:`prepare` an embedding once, then :meth:`decode` blocks of boxes (B,1,4) against it ->
    low_res_masks (B,1,256,256) (and iou_predictions (B,1))."""

    def __init__(self, model_dir: Path, cache_dir: Path | None = None, threads: int = 0,
                 hint: str = "LATENCY", float_precision: str = "auto", encoder: str = "encoder"):
        """``float_precision``: 'auto' (OpenVINO's choice for the CPU, what the predictor ships
        with for int8), 'f32' or 'bf16', for the operations left in float; see
        :func:`float_ops_for`.  ``cache_dir`` must be usable (:func:`cache_problem`) or None.
        ``encoder``: the file name (without ``.xml``) of the encoder graph in ``model_dir``."""
        import openvino as ov
        import openvino.properties as props
        import openvino.properties.hint as hints

        core = ov.Core()
        self.cache_dir = cache_dir
        if cache_dir is not None:
            core.set_property({props.cache_dir: str(cache_dir)})
        config = {hints.performance_mode: getattr(hints.PerformanceMode, hint)}
        if float_precision != "auto":
            config[hints.inference_precision] = float_precision
        if threads:
            config[props.inference_num_threads] = int(threads)
        try:
            # Paths (not ov.Model objects) let a warm cache skip reading the IR entirely; the
            # three graphs load side by side (OpenVINO releases the GIL while it loads).
            with ThreadPoolExecutor(len(GRAPHS)) as pool:
                files = dict(zip(GRAPHS, (encoder, *GRAPHS[1:])))
                jobs = {name: pool.submit(core.compile_model, str(model_dir / f"{files[name]}.xml"), "CPU", config)
                        for name in GRAPHS}
                compiled = {name: job.result() for name, job in jobs.items()}
        except RuntimeError as e:
            first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
            raise EngineError(f"cannot compile the models in {model_dir}: {first}") from None
        for name, io in zip(GRAPHS, (ENCODER_IO, DECODER_IMAGE_IO, DECODER_BOXES_IO)):
            _check_names(compiled[name], name, io)
        self.loaded_from_cache = all(bool(m.get_property(props.loaded_from_cache)) for m in compiled.values())
        self._compiled = compiled
        self._enc = [compiled["encoder"].create_infer_request() for _ in range(2)]
        self._image = compiled["decoder_image"].create_infer_request()
        self._boxes = compiled["decoder_boxes"].create_infer_request()
        self._next = 0

    def start_encode(self, tensor: np.ndarray):
        """Start encoding asynchronously; returns a handle for :meth:`finish_encode`."""
        req = self._enc[self._next]
        self._next ^= 1
        req.start_async({ENCODER_IO[0][0]: tensor})
        return req

    def finish_encode(self, handle) -> np.ndarray:
        handle.wait()
        return handle.get_tensor(ENCODER_IO[1][0]).data.copy()

    def encode(self, tensor: np.ndarray) -> np.ndarray:
        return self.finish_encode(self.start_encode(tensor))

    def release(self, graph: str) -> None:
        """Free the scratch memory of ``graph`` ('encoder' or 'decoder_image') when it will not run
        again in this case (a 2D image's last encoder pass, its last per-image decoder step); its
        output stays valid.  Running it again later allocates the scratch anew."""
        self._compiled[graph].release_memory()

    def prepare(self, embedding: np.ndarray) -> None:
        """The per-image decoder work for ``embedding``; :meth:`decode` then runs against it (until
        the next ``prepare``).  The state stays in OpenVINO's tensor: no copy."""
        self._image.infer({DECODER_IMAGE_IO[0][0]: embedding})
        for name in DECODER_STATE:
            self._boxes.set_tensor(name, self._image.get_tensor(name))

    def decode(self, boxes: np.ndarray, with_iou: bool = False):
        """Low-res logits (B, 1, 256, 256) for boxes (B, 1, 4) in 256-space, on the prepared image;
        with ``with_iou`` also the decoder's IoU prediction per box (B,)."""
        self._boxes.set_tensor(DECODER_BOXES_IO[0][-1], _tensor(np.ascontiguousarray(boxes, dtype=np.float32)))
        self._boxes.infer()
        logits = self._boxes.get_tensor(DECODER_BOXES_IO[1][0]).data.copy()
        if not with_iou:
            return logits
        return logits, self._boxes.get_tensor(DECODER_BOXES_IO[1][1]).data[:, 0].copy()
