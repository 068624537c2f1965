"""OpenVINO encoder and decoder, compiled for CPU with a persistent compile cache.

The decoder runs as two graphs: ``decoder_image`` once per image (the work every box of
it shares) and ``decoder_boxes`` per block of boxes; see
``training/model/factored_decoder.py``.  Graph files and tensor names come from the model
contract (:mod:`qmedsam.model_spec`), which ``make export`` writes by.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qmedsam.cache_guard import entry_key, first_compile
from qmedsam.decoder_windows import GRID, MARGIN, OUTSIDE, SIZES, cells, plan_windows
from qmedsam.model_spec import DECODER_BOXES, DECODER_IMAGE, DECODER_STATE, ENCODER, ENCODERS, GraphSpec

GRAPHS = (ENCODER, DECODER_IMAGE, DECODER_BOXES)          # what the runtime loads, by role
FLOAT_OPS = ("auto", "f32", "bf16")


class EngineError(RuntimeError):
    """The models cannot be loaded or compiled; the message is one line."""


# oneDNN ISA caps without native bf16 arithmetic.  Under them OpenVINO's own choice still picks
# bf16 (the CPU reports it) and then emulates it: 29 s instead of 2 s for a 125-box case.
NO_BF16_CAPS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


def float_ops_for(precision: str, requested: str = "auto", isa_cap: str | None = None) -> str:
    """Precision of the operations the models leave in float.

    ``auto`` lets OpenVINO choose for int8 models (bf16 on CPUs with native bf16, else f32), but
    keeps the float models in f32, so that 'fp32' means f32 arithmetic, and takes f32 where the
    oneDNN ISA cap (``ONEDNN_MAX_CPU_ISA``, or ``isa_cap``) leaves no bf16 instructions."""
    if requested not in FLOAT_OPS:
        raise ValueError(f"float ops {requested!r} not in {FLOAT_OPS}")
    if requested != "auto":
        return requested
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "") if isa_cap is None else isa_cap
    return "f32" if precision == "fp32" or cap.strip().upper() in NO_BF16_CAPS else "auto"


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


def _check_names(model, spec: GraphSpec) -> None:
    have = ({n for p in model.inputs for n in p.get_names()}, {n for p in model.outputs for n in p.get_names()})
    for side, want, got in (("input", spec.inputs, have[0]), ("output", spec.outputs, have[1])):
        missing = [n for n in want if n not in got]
        if missing:
            raise EngineError(f"{spec.name} model has no {side} named {', '.join(missing)} "
                              f"(has {', '.join(sorted(got)) or 'none'}): re-export it with `make export`")


def _compile_error(e: RuntimeError, model_dir: Path) -> EngineError:
    # OpenVINO's message opens with "Exception from <source file>" lines; the reason comes after
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    first = next((line for line in lines if not line.startswith("Exception from")), lines[0] if lines else type(e).__name__)
    return EngineError(f"cannot compile the models in {model_dir}: {first}")


def _compiled(job, model_dir: Path):
    """The compiled model of a loading job, or :class:`EngineError` in one line."""
    try:
        return job.result()
    except RuntimeError as e:
        raise _compile_error(e, model_dir) from None


def _tensor(array: np.ndarray):
    import openvino as ov

    return ov.Tensor(array)


@dataclass(frozen=True)
class EngineOptions:
    """How an :class:`Engine` compiles and runs its models (the predictor's options set them)."""

    cache_dir: Path | None = None     # compile cache; must be usable (:func:`cache_problem`) or None
    threads: int = 0                  # 0: OpenVINO's choice
    hint: str = "LATENCY"             # OpenVINO performance mode
    # the operations the models leave in float: 'auto' (OpenVINO's choice for the CPU, what the
    # predictor ships with for int8), 'f32' or 'bf16'; see :func:`float_ops_for`
    float_precision: str = "auto"
    encoder: str = ENCODER.name       # the encoder graph's file stem in the models folder
    # another encoder graph to have at hand (:meth:`Engine.encode_with`, :meth:`Engine.use_encoder`),
    # loaded beside the others without holding up the first case
    fallback: str | None = None
    windows: bool = True              # a box's per-pixel decoder work over its window only (False: whole grid)
    # OpenVINO pins its threads to cores; a process sharing a machine with others that were not
    # given disjoint cores (Ray actors) must not, or every one of them pins to the same first core
    pin_threads: bool = True


class Engine:
    """Encoder: image (1,3,256,256) -> image_embedding (1,256,64,64).  Decoder:
    :meth:`prepare` an embedding once, then :meth:`decode` blocks of boxes (B,1,4) against it ->
    low_res_masks (B,1,256,256) (and iou_predictions (B,1))."""

    def __init__(self, model_dir: Path, options: EngineOptions = EngineOptions()):
        import openvino as ov
        import openvino.properties as props
        import openvino.properties.hint as hints

        core = ov.Core()
        self.cache_dir = cache_dir = options.cache_dir
        encoder, fallback = options.encoder, options.fallback
        if cache_dir is not None:
            core.set_property({props.cache_dir: str(cache_dir)})
        config = {hints.performance_mode: getattr(hints.PerformanceMode, options.hint)}
        if options.float_precision != "auto":
            config[hints.inference_precision] = options.float_precision
        if options.threads:
            config[props.inference_num_threads] = int(options.threads)
        if not options.pin_threads:
            config[hints.enable_cpu_pinning] = False
        # A float encoder is the float model's (and the reference the int8 one is judged against):
        # f32 arithmetic unless bf16 is asked for; the int8 graphs and the decoder take the setting.
        f32 = dict(config, **{hints.inference_precision: "f32"})
        self._core, self._config, self._f32, self._float_precision = core, config, f32, options.float_precision
        self._model_dir = model_dir
        self._version = ov.get_version()
        self.load_seconds: dict[str, float] = {}        # graph -> seconds its load took, as loads finish
        # Paths (not ov.Model objects) let a warm cache skip reading the IR entirely; the graphs
        # load side by side (OpenVINO releases the GIL while it loads).
        pool = ThreadPoolExecutor(len(GRAPHS) + 1)
        specs = {g.name: ENCODERS[encoder] if g is ENCODER else g for g in GRAPHS}
        jobs = {role: pool.submit(self._compile, spec) for role, spec in specs.items()}
        self._fallback = (fallback, pool.submit(self._compile, ENCODERS[fallback])) if fallback else None
        pool.shutdown(wait=False)
        compiled = {role: _compiled(job, model_dir) for role, job in jobs.items()}
        for role, spec in specs.items():
            _check_names(compiled[role], spec)
        self.loaded_from_cache = all(bool(m.get_property(props.loaded_from_cache)) for m in compiled.values())
        self._compiled = compiled
        self.primary = encoder                         # the encoder graph it was built with
        self.encoder = encoder                         # the encoder graph :meth:`encode` runs
        self._encoders = {encoder: (compiled[ENCODER.name], self._requests(compiled[ENCODER.name]))}
        self._image = compiled[DECODER_IMAGE.name].create_infer_request()
        self._boxes = compiled[DECODER_BOXES.name].create_infer_request()
        self._prepared = False
        self.prepared_token = 0                         # which prepare() the decoder's state is from
        self._in_flight: dict[int, str] = {}            # encoder requests started, not finished -> graph
        self.windows = options.windows
        self.margin = MARGIN                            # pixels around a box inside its window
        # running totals for a case's cost ledger (qmedsam.ledger): passes per encoder graph,
        # OpenVINO's seconds of those passes, wall seconds of decoding
        self.passes: dict[str, int] = {}
        self.encoder_seconds = 0.0
        self.decode_seconds = 0.0

    def _compile(self, spec: GraphSpec):
        """Compile (or load from the cache) one graph of the models folder, timed."""
        float_encoder = spec.precision == "float" and spec.name in ENCODERS
        cfg = self._f32 if float_encoder and self._float_precision == "auto" else self._config
        t = time.perf_counter()
        path = self._model_dir / spec.files[0]
        key = entry_key(path, cfg, self._version) if self.cache_dir is not None else ""
        with first_compile(self.cache_dir, key) as mark_ready:
            try:
                compiled = self._core.compile_model(str(path), "CPU", cfg)
                mark_ready()
            except RuntimeError:
                if self.cache_dir is None:
                    raise
                # an entry another OpenVINO (or a killed process) left unreadable: compile this
                # graph without the cache
                import openvino.properties as props

                compiled = self._core.compile_model(str(path), "CPU", dict(cfg, **{props.cache_dir: ""}))
        self.load_seconds[spec.name] = time.perf_counter() - t
        return compiled

    def _count_pass(self, name: str, req) -> None:
        self.passes[name] = self.passes.get(name, 0) + 1
        self.encoder_seconds += req.latency / 1000.0

    @staticmethod
    def _requests(compiled) -> list:
        return [compiled.create_infer_request() for _ in range(2)]

    def has_encoder(self, name: str) -> bool:
        """Whether encoder graph ``name`` is loaded or can be (its files are in the models folder)."""
        return name in self._encoders or (name in ENCODERS and all(
            (self._model_dir / f).is_file() for f in ENCODERS[name].files))

    @property
    def fallback(self) -> str | None:
        """The other encoder graph at hand, if any."""
        return self._fallback[0] if self._fallback else None

    def _encoder(self, name: str):
        """(compiled model, its two infer requests) of encoder graph ``name``."""
        if name not in self._encoders:
            if name not in ENCODERS:
                raise EngineError(f"no encoder graph {name} (have {', '.join(ENCODERS)})")
            if self.fallback == name:
                compiled = _compiled(self._fallback[1], self._model_dir)
            else:                            # a graph no earlier case ran: loaded now, once
                try:
                    compiled = self._compile(ENCODERS[name])
                except RuntimeError as e:
                    raise _compile_error(e, self._model_dir) from None
            _check_names(compiled, ENCODERS[name])
            self._encoders[name] = (compiled, self._requests(compiled))
        return self._encoders[name]

    def use_encoder(self, name: str) -> None:
        """Run encoder graph ``name`` (this one or the fallback) from the next :meth:`start_encode` on."""
        self._compiled[ENCODER.name] = self._encoder(name)[0]
        self.encoder = name

    def _idle_request(self, name: str):
        """An infer request of encoder graph ``name`` that no started encode still owns: reusing one
        in flight would hand its owner another slice's embedding."""
        for req in self._encoder(name)[1]:
            if id(req) not in self._in_flight:
                return req
        raise EngineError("two encodes are already in flight: finish one before starting another")

    def encode_with(self, name: str, tensor: np.ndarray) -> np.ndarray:
        """The embedding of ``tensor`` by encoder graph ``name``, whichever encoder is in use."""
        req = self._idle_request(name)
        req.infer({ENCODER.inputs[0]: tensor})
        self._count_pass(name, req)
        return req.get_tensor(ENCODER.outputs[0]).data.copy()

    def start_encode(self, tensor: np.ndarray):
        """Start encoding asynchronously on an idle request; returns a handle for :meth:`finish_encode`
        (at most two encodes in flight)."""
        req = self._idle_request(self.encoder)
        req.start_async({ENCODER.inputs[0]: tensor})
        self._in_flight[id(req)] = self.encoder
        return req

    def finish_encode(self, handle) -> np.ndarray:
        handle.wait()
        self._count_pass(self._in_flight.pop(id(handle)), handle)
        return handle.get_tensor(ENCODER.outputs[0]).data.copy()

    def encode(self, tensor: np.ndarray) -> np.ndarray:
        return self.finish_encode(self.start_encode(tensor))

    def release_encoder(self, name: str) -> None:
        """Free the scratch memory of encoder graph ``name`` if it is loaded (the guard's encoder
        that a case does not run: about 75 MB an infer request that has run); using it again later
        allocates the scratch anew."""
        if name in self._encoders:
            self._encoders[name][0].release_memory()

    def release(self, graph: str) -> None:
        """Free the scratch memory of ``graph`` ('encoder' or 'decoder_image') when it will not run
        again in this case (a 2D image's last encoder pass, its last per-image decoder step); its
        output stays valid.  Running it again later allocates the scratch anew."""
        self._compiled[graph].release_memory()

    def prepare(self, embedding: np.ndarray) -> int:
        """The per-image decoder work for ``embedding``; :meth:`decode` then runs against it (until
        the next ``prepare``).  The state stays in OpenVINO's tensor: no copy.  Returns a token that
        :attr:`prepared_token` keeps while this state is the one decoded against."""
        t = time.perf_counter()
        self._image.infer({DECODER_IMAGE.inputs[0]: embedding})
        for name in DECODER_STATE:
            self._boxes.set_tensor(name, self._image.get_tensor(name))
        self._prepared = True
        self.prepared_token += 1
        self.decode_seconds += time.perf_counter() - t
        return self.prepared_token

    def decode(self, boxes: np.ndarray, with_iou: bool = False):
        """Low-res logits (B, 1, 256, 256) for boxes (B, 1, 4) in 256-space, on the prepared image;
        with ``with_iou`` also the decoder's IoU prediction per box (B,).  A box's per-pixel work
        runs over its window (:mod:`qmedsam.decoder_windows`): one graph call per window size
        present; outside its window a box's logits are ``OUTSIDE``."""
        if not self._prepared:
            raise EngineError("decode before prepare: no image embedding has been set for the boxes")
        t = time.perf_counter()
        try:
            return self._decode(np.ascontiguousarray(boxes, dtype=np.float32), with_iou)
        finally:
            self.decode_seconds += time.perf_counter() - t

    def _decode(self, boxes: np.ndarray, with_iou: bool):
        groups = plan_windows(boxes, self.margin, SIZES if self.windows else ())
        if len(groups) == 1 and groups[0][0] is None:
            logits, iou = self._decode_cells(boxes, cells(groups[0][2], None))
            return (logits, iou) if with_iou else logits
        logits = np.full((len(boxes), 1, 4 * GRID, 4 * GRID), OUTSIDE, np.float32)
        iou = np.empty(len(boxes), np.float32)
        for size, idx, origins in groups:
            part, iou[idx] = self._decode_cells(boxes[idx], cells(origins, size))
            if size is None:
                logits[idx] = part
                continue
            for j, (k, (y, x)) in enumerate(zip(idx, origins)):
                logits[k, 0, 4 * y:4 * (y + size), 4 * x:4 * (x + size)] = part[j, 0]
        return (logits, iou) if with_iou else logits

    def _decode_cells(self, boxes: np.ndarray, cell_idx: np.ndarray):
        """One call of the per-box graph: the windows' logits (n, 1, 4H, 4W) and IoU (n,)."""
        self._boxes.set_tensor(DECODER_BOXES.inputs[-2], _tensor(boxes))
        self._boxes.set_tensor(DECODER_BOXES.inputs[-1], _tensor(np.ascontiguousarray(cell_idx)))
        self._boxes.infer()
        return (self._boxes.get_tensor(DECODER_BOXES.outputs[0]).data.copy(),
                self._boxes.get_tensor(DECODER_BOXES.outputs[1]).data[:, 0].copy())
