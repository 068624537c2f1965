"""``make nncf-anchor``: OpenVINO's own post-training quantizer (NNCF) on the same float encoder
and the same calibration slices as the Brevitas recipe: the anchor the shipped Brevitas models
have to beat (issue 23, item 2).

It writes a candidate models folder (``--out``, default ``out/nncf``): a copy of the committed
models whose two int8 encoders are NNCF's, ``encoder`` with 8-bit weights and ``encoder_w7``
with NNCF's overflow fix (weights in 7 bits on every layer, the same remedy as the Brevitas
7-bit encoder), each recorded in the copy's manifest.  ``--accuracy-control`` runs
``nncf.quantize_with_accuracy_control`` instead: it puts the most sensitive layers back in float
until the mask Dice against the float model on validation images (calibration images with
structure boxes, never the held-out files) is within ``--max-drop``.  Compare with
``make bench-int8 CANDIDATE=out/nncf`` (accuracy) and ``make bench-model`` (speed).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from qmedsam.model.spec import ENCODER, ENCODER_W7, ENCODERS, MANIFEST
from training.graph_export import GRAPH_EXTS, path_of
from training.manifest_writer import update_manifest

WEIGHT_BITS = {ENCODER.name: 8, ENCODER_W7.name: 7}


def quantize(float_xml: Path, images: list[np.ndarray], weight_bits: int, validation=None, max_drop: float = 0.01):
    """NNCF's int8 model of the float encoder at ``float_xml``, calibrated on ``images`` (model
    inputs, (1, 3, 256, 256) float32): weights in 8 bits, or in 7 (``overflow_fix``) on every
    layer.  ``validation``: (items, fn) for accuracy control (``fn(compiled, items) -> (metric,
    per-item values)``)."""
    import nncf
    import openvino as ov

    if weight_bits not in (7, 8):
        raise ValueError(f"weight bits {weight_bits} not 7 or 8")
    model = ov.Core().read_model(float_xml)
    data = nncf.Dataset(images)
    fix = nncf.OverflowFix.ENABLE if weight_bits == 7 else nncf.OverflowFix.DISABLE
    common = dict(subset_size=len(images), model_type=nncf.ModelType.TRANSFORMER)
    if validation is None:
        return nncf.quantize(model, data, advanced_parameters=nncf.AdvancedQuantizationParameters(overflow_fix=fix),
                             **common)
    items, fn = validation
    return nncf.quantize_with_accuracy_control(
        model, data, nncf.Dataset(items, lambda item: item[0]), fn, max_drop=max_drop,
        advanced_quantization_parameters=nncf.AdvancedQuantizationParameters(overflow_fix=fix), **common)


def mask_agreement(fmodel, pairs) -> tuple[list, callable]:
    """Validation items (model input, boxes in model space, float masks) of (image, boxes) pairs,
    and the function accuracy control calls: mean mask Dice of a compiled encoder's masks,
    through the float decoder, against the float model's."""
    import torch

    from training.ptq import make_eval_set, mask_dice

    ev = make_eval_set(fmodel, pairs)
    fdec = fmodel.decoder()
    items = [(x.numpy(), b, m) for x, b, m in zip(ev.images, ev.boxes, ev.masks)]

    @torch.no_grad()
    def fn(compiled, data) -> tuple[float, list[float]]:
        per_item = []
        for x, boxes, ref in data:
            emb = torch.from_numpy(np.asarray(compiled(x)[0]))
            per_item.append(float(mask_dice(fdec(emb, boxes) > 0, ref).mean()))
        return float(np.mean(per_item)), per_item

    return items, fn


def float_layer_count(model) -> int:
    """Convolutions and matrix products of an OpenVINO model with no FakeQuantize on any input
    (what NNCF left in float)."""
    kinds = {"Convolution", "GroupConvolution", "MatMul"}
    float_ops = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() in kinds:
            parents = [op.input_value(i).get_node() for i in range(op.get_input_size())]
            if not any(_quantized(p) for p in parents):
                float_ops += 1
    return float_ops


def _quantized(node) -> bool:
    """A FakeQuantize, possibly behind the Convert/Reshape/Transpose chain NNCF puts on weights."""
    for _ in range(4):
        if node.get_type_name() == "FakeQuantize":
            return True
        if node.get_type_name() not in ("Convert", "Reshape", "Transpose", "Multiply", "Subtract"):
            return False
        node = node.input_value(0).get_node()
    return False


def write_candidate(models: Path, out: Path, encoders: dict, record: dict) -> None:
    """``out``: a copy of the models folder ``models`` (its ``reference`` graphs left out) whose
    int8 encoders are replaced by ``encoders`` (graph name -> OpenVINO model), each recorded in
    its manifest with ``record`` and its weight bits."""
    import openvino as ov

    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(models, out, ignore=shutil.ignore_patterns("reference"))
    for name, model in encoders.items():
        for ext in GRAPH_EXTS:
            path_of(out, ENCODERS[name], ext).unlink(missing_ok=True)
        ov.save_model(model, path_of(out, ENCODERS[name], "xml"), compress_to_fp16=False)
        update_manifest(out, [ENCODERS[name]], **{name: dict(record, graph=name, weight_bits=WEIGHT_BITS[name],
                                                          float_layers=float_layer_count(model))})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=Path("models"), help="the committed models (with fp32/)")
    ap.add_argument("--out", type=Path, default=Path("out/nncf"))
    ap.add_argument("--calib", type=int, default=48, help="calibration slices (the Brevitas recipe's 48)")
    ap.add_argument("--accuracy-control", action="store_true")
    ap.add_argument("--max-drop", type=float, default=0.01, help="mask Dice drop allowed (accuracy control)")
    ap.add_argument("--validation", type=int, default=24, help="validation images (accuracy control)")
    ap.add_argument("--weights", type=Path, default=None)
    args = ap.parse_args(argv)
    float_xml = path_of(args.models / "fp32", ENCODER, "xml")
    if not float_xml.is_file() or not (args.models / MANIFEST).is_file():
        print(f"nncf-anchor: {float_xml} or {args.models / MANIFEST} missing (make export-fp32)", file=sys.stderr)
        return 1
    from tools.modalities import calibration_entries, structure_boxes
    from training.ptq import model_inputs

    entries = calibration_entries(args.calib + (args.validation if args.accuracy_control else 0))
    images = [x.numpy() for x in model_inputs([(tag, img) for _, tag, img in entries[:args.calib]])]
    validation = None
    if args.accuracy_control:
        from tools.weights import DEFAULT_PATH, ensure_weights
        from training.model.lite_medsam import build_lite_medsam

        pairs = [(img, structure_boxes(img)) for _, _, img in entries[args.calib:]]
        validation = mask_agreement(build_lite_medsam(ensure_weights(args.weights or DEFAULT_PATH)),
                                    [p for p in pairs if len(p[1])])
    encoders, seconds = {}, {}
    for name, bits in WEIGHT_BITS.items():
        t0 = time.time()
        print(f"nncf-anchor: {name} ({bits}-bit weights) on {len(images)} calibration slices"
              f"{', accuracy control' if validation else ''}", file=sys.stderr, flush=True)
        encoders[name] = quantize(float_xml, images, bits, validation, args.max_drop)
        seconds[name] = round(time.time() - t0, 1)
    import nncf

    record = {"method": f"NNCF {nncf.__version__} " + ("quantize_with_accuracy_control" if validation else "quantize")
                        + " (model_type transformer, default preset) on the float encoder (make nncf-anchor)",
              "calibration": [tag for _, tag, _ in entries[:args.calib]],
              **({"max_drop": args.max_drop, "validation_images": len(validation[0])} if validation else {})}
    write_candidate(args.models, args.out, encoders, record)
    print(f"nncf-anchor: {', '.join(f'{k} {v} s' for k, v in seconds.items())}; candidate folder {args.out} "
          f"(make bench-int8 CANDIDATE={args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
