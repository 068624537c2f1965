"""LiteMedSAM as OpenVINO graphs compiled once for the CPU: it computes and keeps nothing of an image.

Encode a model input with a named encoder graph, prepare the decoder's per-image state from an
embedding (``decoder_image``), decode blocks of boxes against a state (``decoder_boxes``; the
factoring is ``training/model/factored_decoder.py``).  Embeddings and states belong to the caller
(:class:`qmedsam.image.predictor.ImagePredictor`), so any number of images can be live at once.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qmedsam.model.cache import entry_key, first_compile
from qmedsam.model.checks import check_names, compile_error
from qmedsam.model.folder import EngineError, has_graph
from qmedsam.model.spec import DECODER_BOXES, DECODER_IMAGE, DECODER_STATE, ENCODER, ENCODERS, GraphSpec
from qmedsam.model.windows import GRID, MARGIN, OUTSIDE, SIZES, cells, plan_windows

FLOAT_OPS = ("auto", "f32", "bf16")


@dataclass(frozen=True)
class ModelSettings:
    """How a :class:`Model` compiles and runs its graphs."""

    cache_dir: Path | None = None     # compile cache; must be usable (qmedsam.model.cache.cache_problem) or None
    threads: int = 0                  # 0: OpenVINO's choice
    hint: str = "LATENCY"             # OpenVINO performance mode
    # the operations the graphs leave in float: 'auto' (OpenVINO's choice for the CPU), 'f32' or
    # 'bf16'; qmedsam.precision decides it
    float_ops: str = "auto"
    encoder: str = ENCODER.name       # the encoder graph loaded up front with the decoder
    also: str | None = None           # another encoder graph loaded beside them, not waited for
    windows: bool = True              # a box's per-pixel decoder work over its window only (False: whole grid)
    # OpenVINO pins its threads to cores; processes sharing a machine without disjoint cores (Ray
    # actors) must not, or every one of them pins to the same first core
    pin_threads: bool = True


class Encoding:
    """An encoder pass started on one of an encoder graph's two infer requests."""

    def __init__(self, graph: str, request):
        self.graph, self.request = graph, request
        self.seconds = 0.0            # OpenVINO's own time of the pass, once finished


class DecoderState:
    """The decoder's per-image state: one OpenVINO tensor per part, over memory this object owns."""

    def __init__(self, compiled_image):
        import openvino as ov

        self.tensors = {}
        for port in compiled_image.outputs:
            name = port.get_any_name()
            shape = tuple(port.get_shape())
            self.tensors[name] = ov.Tensor(np.empty(shape, np.float32), shared_memory=True)


class Model:
    """Encoder: image (1,3,256,256) -> image_embedding (1,256,64,64).  Decoder: :meth:`prepare` an
    embedding into a :class:`DecoderState`, then :meth:`decode` boxes (B,1,4) against it -> low-res
    logits (B,1,256,256) and IoU predictions (B,)."""

    def __init__(self, folder: Path, settings: ModelSettings = ModelSettings()):
        import openvino as ov
        import openvino.properties as props
        import openvino.properties.hint as hints

        core = ov.Core()
        self.folder, self.settings = folder, settings
        if settings.cache_dir is not None:
            core.set_property({props.cache_dir: str(settings.cache_dir)})
        config = {hints.performance_mode: getattr(hints.PerformanceMode, settings.hint)}
        if settings.float_ops != "auto":
            config[hints.inference_precision] = settings.float_ops
        if settings.threads:
            config[props.inference_num_threads] = int(settings.threads)
        if not settings.pin_threads:
            config[hints.enable_cpu_pinning] = False
        # A float encoder is the float model's (and the reference the int8 one is judged against):
        # f32 arithmetic unless bf16 is asked for; the int8 graphs and the decoder take the setting.
        self._core, self._config = core, config
        self._f32 = dict(config, **{hints.inference_precision: "f32"})
        self._version = ov.get_version()
        self.load_seconds: dict[str, float] = {}        # graph -> seconds its load took, as loads finish
        # Paths (not ov.Model objects) let a warm cache skip reading the IR entirely; the graphs
        # load side by side (OpenVINO releases the GIL while it loads).
        pool = ThreadPoolExecutor(4)
        specs = (ENCODERS[settings.encoder], DECODER_IMAGE, DECODER_BOXES)
        jobs = [pool.submit(self._compile, spec) for spec in specs]
        self._later = {settings.also: pool.submit(self._compile, ENCODERS[settings.also])} if settings.also else {}
        pool.shutdown(wait=False)
        compiled = [self._result(job) for job in jobs]
        for model, spec in zip(compiled, specs):
            check_names(model, spec)
        self.loaded_from_cache = all(bool(m.get_property(props.loaded_from_cache)) for m in compiled)
        self._encoders = {settings.encoder: self._requests(compiled[0])}
        self._image_graph, self._boxes_graph = compiled[1], compiled[2]
        self._image = compiled[1].create_infer_request()
        self._boxes = compiled[2].create_infer_request()
        self._bound: DecoderState | None = None          # the state the per-box request reads now
        self._busy: set[int] = set()                      # encoder requests started, not finished
        self.margin = MARGIN          # pixels around a box inside its window (bench-model varies it)
        self._prompts = None          # the API's prompt decoder, made on first use

    def _result(self, job):
        try:
            return job.result()
        except RuntimeError as e:
            raise compile_error(e, self.folder) from None

    def _compile(self, spec: GraphSpec):
        """Compile (or load from the cache) one graph of the models folder, timed."""
        float_encoder = spec.precision == "float" and spec.name in ENCODERS
        cfg = self._f32 if float_encoder and self.settings.float_ops == "auto" else self._config
        cache = self.settings.cache_dir
        t = time.perf_counter()
        path = self.folder / spec.files[0]
        with first_compile(cache, entry_key(path, cfg, self._version) if cache else "") as mark_ready:
            try:
                compiled = self._core.compile_model(str(path), "CPU", cfg)
                mark_ready()
            except RuntimeError:
                if cache is None:
                    raise
                # an entry another OpenVINO (or a killed process) left unreadable: compile this
                # graph without the cache
                import openvino.properties as props

                compiled = self._core.compile_model(str(path), "CPU", dict(cfg, **{props.cache_dir: ""}))
        self.load_seconds[spec.name] = time.perf_counter() - t
        return compiled

    @staticmethod
    def _requests(compiled) -> tuple:
        return compiled, [compiled.create_infer_request() for _ in range(2)]

    def has_encoder(self, name: str) -> bool:
        """Whether encoder graph ``name`` is loaded or can be (its files are in the models folder)."""
        return name in self._encoders or (name in ENCODERS and has_graph(self.folder, name))

    def _encoder(self, name: str):
        """(compiled model, its two infer requests) of encoder graph ``name``, loaded on first use."""
        if name not in self._encoders:
            if name not in ENCODERS:
                raise EngineError(f"no encoder graph {name} (have {', '.join(ENCODERS)})")
            job = self._later.pop(name, None)
            compiled = self._result(job) if job is not None else self.compile_graph(ENCODERS[name])
            check_names(compiled, ENCODERS[name])
            self._encoders[name] = self._requests(compiled)
        return self._encoders[name]

    def start_encode(self, tensor: np.ndarray, graph: str) -> Encoding:
        """Start encoding ``tensor`` with encoder graph ``graph`` on an idle request (at most two
        in flight per graph: reusing one in flight would hand its owner another image's embedding)."""
        req = next((r for r in self._encoder(graph)[1] if id(r) not in self._busy), None)
        if req is None:
            raise EngineError("two encodes are already in flight: finish one before starting another")
        req.start_async({ENCODER.inputs[0]: tensor})
        self._busy.add(id(req))
        return Encoding(graph, req)

    def finish_encode(self, encoding: Encoding) -> np.ndarray:
        """The embedding of a started pass (its ``seconds`` set)."""
        req = encoding.request
        req.wait()
        self._busy.discard(id(req))
        encoding.seconds = req.latency / 1000.0
        return req.get_tensor(ENCODER.outputs[0]).data.copy()

    def encode(self, tensor: np.ndarray, graph: str) -> tuple[np.ndarray, float]:
        """(embedding, OpenVINO's seconds) of one encoder pass, waited for."""
        encoding = self.start_encode(tensor, graph)
        return self.finish_encode(encoding), encoding.seconds

    def release_encoder(self, name: str) -> None:
        """Free the scratch memory of encoder graph ``name`` if loaded (about 75 MB an infer request
        that has run); using it again later allocates the scratch anew."""
        if name in self._encoders:
            self._encoders[name][0].release_memory()

    def release_prepare(self) -> None:
        """Free the per-image decoder step's scratch when no other image will be prepared (a 2D
        case's last); states already made stay valid."""
        self._image_graph.release_memory()

    def prepare(self, embedding: np.ndarray, state: DecoderState | None = None) -> DecoderState:
        """The per-image decoder work for ``embedding``, written into ``state`` (a new one if None)."""
        state = state or DecoderState(self._image_graph)
        for name, tensor in state.tensors.items():
            self._image.set_tensor(name, tensor)
        self._image.infer({DECODER_IMAGE.inputs[0]: embedding})
        return state

    def decode(self, state: DecoderState, boxes: np.ndarray):
        """(low-res logits (B, 1, 256, 256), IoU predictions (B,)) for boxes (B, 1, 4) in 256-space
        against ``state``.  A box's per-pixel work runs over its window (:mod:`qmedsam.model.windows`):
        one graph call per window size present; outside its window a box's logits are ``OUTSIDE``."""
        if self._bound is not state:
            for name in DECODER_STATE:
                self._boxes.set_tensor(name, state.tensors[name])
            self._bound = state
        import openvino as ov

        boxes = np.ascontiguousarray(boxes, dtype=np.float32)
        groups = plan_windows(boxes, self.margin, SIZES if self.settings.windows else ())
        whole = len(groups) == 1 and groups[0][0] is None
        logits = None if whole else np.full((len(boxes), 1, 4 * GRID, 4 * GRID), OUTSIDE, np.float32)
        iou = np.empty(len(boxes), np.float32)
        req = self._boxes
        for size, idx, origins in groups:       # one call of the per-box graph per window size
            req.set_tensor(DECODER_BOXES.inputs[-2], ov.Tensor(np.ascontiguousarray(boxes[idx])))
            req.set_tensor(DECODER_BOXES.inputs[-1], ov.Tensor(np.ascontiguousarray(cells(origins, size))))
            req.infer()
            part = req.get_tensor(DECODER_BOXES.outputs[0]).data.copy()
            iou[idx] = req.get_tensor(DECODER_BOXES.outputs[1]).data[:, 0]
            if whole:
                return part, iou
            if size is None:
                logits[idx] = part
                continue
            for j, (k, (y, x)) in enumerate(zip(idx, origins)):
                logits[k, 0, 4 * y:4 * (y + size), 4 * x:4 * (x + size)] = part[j, 0]
        return logits, iou

    def prompt_decoder(self):
        """The API's prompt decoder (:class:`qmedsam.model.prompt_graph.PromptDecoder`), made on first use."""
        if self._prompts is None:
            from qmedsam.model.prompt_graph import PromptDecoder

            self._prompts = PromptDecoder(self)
        return self._prompts

    def compile_graph(self, spec: GraphSpec):
        """``spec``'s graph of the models folder compiled now, as the start-up's are (cache included)."""
        try:
            return self._compile(spec)
        except RuntimeError as e:
            raise compile_error(e, self.folder) from None
