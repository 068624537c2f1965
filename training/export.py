"""``make export`` / ``make export-fp32``: LiteMedSAM -> ONNX -> OpenVINO IR, with a manifest.

int8: Brevitas QCDQ ONNX of the quantized encoder and decoder (from a QAT
checkpoint with ``--ckpt``, else post-training quantization of the pretrained
weights on real public slices), constant weight clips folded, converted with
``openvino.convert_model`` and saved without fp16 compression.
fp32: the same graphs in float (``MODELS/fp32``), for comparison.
Both: the factored mask decoder the runtime runs (``decoder_image``, once per image, and
``decoder_boxes``, per block of boxes; ``training/model/factored_decoder.py``), in float from
the float weights (the pretrained ones, or the QAT checkpoint's).  ``decoder`` is the plain,
unfactored decoder: the reference the factored one is tested and benchmarked against.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import openvino as ov
import torch

from qmedsam.model_spec import (DECODER_BOXES, DECODER_IMAGE, DECODER_PLAIN, ENCODER, ENCODER_FLOAT, ENCODER_W7,
                                 MANIFEST, REFERENCE_FOLDER, SHIPPED, GraphSpec, contract)
from training.model.factored_decoder import DecoderBoxes, DecoderImageState
from training.model.lite_medsam import LiteMedSAM, build_lite_medsam
from training.onnx_fold import fold_constant_clips, untie_dequant_constants
from tools.weights import DEFAULT_PATH, ensure_weights, sha256_of


def _batch_axes(spec: GraphSpec) -> dict:
    """Dynamic box-batch axes of a decoder graph: its ``boxes`` input and every output."""
    return {name: {0: "B"} for name in ("boxes", *spec.outputs)}


GRAPHS = (*SHIPPED, DECODER_PLAIN)
OPSET = 17


def path_of(folder: Path, spec: GraphSpec, ext: str = "xml") -> Path:
    """Where a graph's file goes in a models folder: the runtime's graphs at its top, the ONNX
    files and the plain decoder in its reference folder (``qmedsam.model_spec``)."""
    ref = ext == "onnx" or spec is DECODER_PLAIN
    return (folder / REFERENCE_FOLDER if ref else folder) / f"{spec.name}.{ext}"


def example_inputs():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 256, 256)
    emb = torch.randn(1, 256, 64, 64)
    boxes = torch.tensor([[[30.0, 40.0, 150.0, 200.0]], [[10.0, 10.0, 60.0, 90.0]]])
    return image, emb, boxes


def graphs(model: LiteMedSAM):
    """(spec, module, example args, dynamic axes) of each quantized artifact."""
    image, emb, boxes = example_inputs()
    return ((ENCODER, model.image_encoder, (image,), None),
            (DECODER_PLAIN, model.decoder(), (emb, boxes), _batch_axes(DECODER_PLAIN)))


def factored_graphs(fmodel: LiteMedSAM):
    """The runtime's decoder graphs, (spec, module, args, dynamic axes) as :func:`graphs`."""
    _, emb, boxes = example_inputs()
    image_state = DecoderImageState(fmodel).eval()
    with torch.no_grad():
        state = image_state(emb)
    return ((DECODER_IMAGE, image_state, (emb,), None),
            (DECODER_BOXES, DecoderBoxes(fmodel).eval(), (*state, boxes), _batch_axes(DECODER_BOXES)))


def float_copy(model: LiteMedSAM) -> LiteMedSAM:
    """A float LiteMedSAM with a (possibly quantized) model's prompt encoder and mask decoder,
    quantizer state dropped: what the factored decoder graphs are made from.  The image encoder
    is not copied (a quantized one may have merged BatchNorms and equalization scales) and keeps
    its initial values."""
    parts = ("prompt_encoder.", "mask_decoder.")
    state = {k: v for k, v in model.state_dict().items() if "_quant" not in k and k.startswith(parts)}
    fmodel = LiteMedSAM()
    missing, unexpected = fmodel.load_state_dict(state, strict=False)
    missing = [k for k in missing if k.startswith(parts)]
    if missing or unexpected:
        raise RuntimeError(f"float copy: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return fmodel.eval()


def onnx_to_ir(onnx_path: Path, xml_path: Path, fp16_weights: bool = False) -> None:
    """IR from ONNX; float weights stored as f16 with ``fp16_weights`` (OpenVINO turns them back
    into f32 at load: half the file, the same speed); the encoder's attention-bias tables stored
    compact (``training/ir_attention_biases.py``: the same compiled model, 1.4-3.7 MB less a file)."""
    from training.ir_attention_biases import compact_attention_biases

    model = ov.convert_model(str(onnx_path))
    compact_attention_biases(model)
    ov.save_model(model, str(xml_path), compress_to_fp16=fp16_weights)


def export_float(model: LiteMedSAM, out: Path, entries=None, keep_onnx: bool = True,
                 fp16_weights: bool = False) -> dict[str, Path]:
    """Float ONNX + IR of ``entries`` (default: every graph of the float ``model``); without
    ``keep_onnx`` the ONNX files are an intermediate step only (the IR is what runs)."""
    paths = {}
    with tempfile.TemporaryDirectory() as tmp:
        for spec, module, args, dyn in entries or (*graphs(model), *factored_graphs(model)):
            onnx_path = path_of(out, spec, "onnx") if keep_onnx else Path(tmp) / f"{spec.name}.onnx"
            xml = path_of(out, spec)
            for folder in {onnx_path.parent, xml.parent}:
                folder.mkdir(parents=True, exist_ok=True)
            torch.onnx.export(module.eval(), args, str(onnx_path), input_names=list(spec.inputs),
                              output_names=list(spec.outputs), dynamic_axes=dyn, opset_version=OPSET, dynamo=False)
            onnx_to_ir(onnx_path, xml, fp16_weights)
            paths[spec.name] = xml
    return paths


def export_quant(model: LiteMedSAM, out: Path, float_source: LiteMedSAM | None = None) -> dict[str, int]:
    """QCDQ export of a calibrated/trained quantized model, plus the float factored decoder from
    ``float_source`` (default: the model's own weights); returns folded clips per graph."""
    folded = {spec.name: _export_qcdq(spec, module, args, dyn, out) for spec, module, args, dyn in graphs(model)}
    # The runtime's float decoder graphs beside the int8 ones: their IR is what runs (the ONNX
    # would only add size), with f16-stored weights (13 MB less in the image; masks vs the plain
    # float decoder: mean Dice 0.9999 in f32 on real slices; bf16 rounds them more anyway).
    export_float(model, out, factored_graphs(float_source or float_copy(model)), keep_onnx=False, fp16_weights=True)
    return folded


def _export_qcdq(spec: GraphSpec, module, args, dyn, out: Path) -> int:
    """One quantized graph: Brevitas QCDQ ONNX (in the reference folder), its constant weight clips
    folded and dequantization constants untied (``training/onnx_fold.py``), then IR; returns the
    clips folded."""
    from brevitas.export import export_onnx_qcdq

    onnx_path = path_of(out, spec, "onnx")
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    export_onnx_qcdq(module.eval(), args=args, export_path=str(onnx_path), input_names=list(spec.inputs),
                     output_names=list(spec.outputs), dynamic_axes=dyn, opset_version=OPSET, dynamo=False)
    proto = onnx.load(str(onnx_path))
    folded = fold_constant_clips(proto)
    untie_dequant_constants(proto)
    onnx.save(proto, str(onnx_path))
    onnx_to_ir(onnx_path, path_of(out, spec))
    return folded


def add_w7_encoder(models: Path, weights: Path, n_calib: int, source: Path | None = None) -> None:
    """The post-training recipe again with 7-bit weights, its encoder exported as ``encoder_w7``
    (what ``--precision auto`` runs on AVX-512 CPUs without VNNI; qmedsam.encoder_choice) into an
    int8 models folder and recorded in its manifest (part of ``make export``; ``--add-w7`` on its
    own).  ``source``: a folder ``make export WEIGHT_BITS=7`` wrote, whose encoder is taken as it
    is instead of running the recipe again."""
    if source is not None:
        record = json.loads((source / MANIFEST).read_text())
        if record.get("weight_bits") != 7:
            raise SystemExit(f"{source}: its manifest does not record 7-bit weights (make export WEIGHT_BITS=7)")
        path_of(models, ENCODER_W7, "onnx").parent.mkdir(parents=True, exist_ok=True)
        for ext in ("xml", "bin", "onnx"):
            shutil.copyfile(path_of(source, ENCODER, ext), path_of(models, ENCODER_W7, ext))
        folded = record["onnx"]["constant_clips_folded"][ENCODER.name]
    else:
        from training.ptq_recipe import post_training_quantize

        model, record = post_training_quantize(weights, n_calib, 0, weight_bits=7)
        image, _, _ = example_inputs()
        folded = _export_qcdq(ENCODER_W7, model.image_encoder, (image,), None, models)
    _update_manifest(models, [ENCODER_W7], encoder_w7={
        "graph": ENCODER_W7.name, "weight_bits": 7, "when": ENCODER_W7.role,
        "method": "the same post-training recipe with 7-bit weight quantizers (narrow range, |q| <= 63)",
        "from": str(source) if source else "make export", "encoder_steps": record["encoder_steps"],
        "encoder_agreement": record["encoder_agreement"], "float_layers": record["float_layers"],
        "constant_clips_folded": folded})


def export_float_encoder(pretrained: LiteMedSAM, out: Path) -> dict:
    """The float encoder the runtime runs on CPUs where int8 is slow (``qmedsam.encoder_choice``):
    the pretrained float weights, stored as f16 (f32 at run time), beside the int8 models.
    Returns its manifest record."""
    image, _, _ = example_inputs()
    export_float(pretrained, out, [(ENCODER_FLOAT, pretrained.image_encoder, (image,), None)],
                 keep_onnx=False, fp16_weights=True)
    return {"graph": ENCODER_FLOAT.name, "precision": "float", "weights": "the pretrained float weights",
            "weights_stored_as": "f16 (f32 at run time)",
            "when": "--precision auto on CPUs without AVX-512, VNNI or AMX (qmedsam/encoder_choice.py)"}


def add_float_encoder(models: Path, weights: Path) -> None:
    """Export the float encoder into an int8 models folder and record it in its manifest (part of
    ``make export``; also usable on its own for a folder exported before it existed)."""
    record = export_float_encoder(build_lite_medsam(weights), models)
    _update_manifest(models, [ENCODER_FLOAT], float_encoder=record)


RUNTIME_DECODER = (DECODER_IMAGE, DECODER_BOXES)
PRETRAINED_FLOAT = "the pretrained float weights"


def refresh_runtime_decoder(models: Path, weights: Path) -> None:
    """Re-export the runtime's float decoder graphs (:data:`RUNTIME_DECODER`) into an int8 models
    folder whose manifest says they come from the pretrained weights, and update its file records;
    the int8 graphs stay byte-identical.  ``make export-decoder``: a change to
    ``training/model/factored_decoder.py`` without the PTQ's minutes; ``make export`` writes the
    same graphs (:func:`export_quant`)."""
    record = json.loads((models / MANIFEST).read_text()).get("runtime_decoder", {})
    if record.get("weights") != PRETRAINED_FLOAT:
        raise SystemExit(f"{models}: its decoder graphs come from {record.get('weights') or 'unrecorded weights'}, "
                         f"not {PRETRAINED_FLOAT}: run `make export` (with CKPT= for a QAT checkpoint)")
    fmodel = build_lite_medsam(weights)
    export_float(fmodel, models, factored_graphs(fmodel), keep_onnx=False, fp16_weights=True)
    refreshed = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    _update_manifest(models, RUNTIME_DECODER, runtime_decoder=dict(record, refreshed=refreshed))


def _update_manifest(models: Path, graphs, **entries) -> None:
    """Record new ``graphs`` (their .xml/.bin hashes) and top-level ``entries`` in the folder's
    manifest, keeping the rest of it."""
    manifest = json.loads((models / MANIFEST).read_text())
    manifest.update(entries, contract=contract())
    manifest["files"].update(_file_records(models, [path_of(models, g, ext) for g in graphs
                                                    for ext in ("xml", "bin", "onnx")]))
    (models / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def _file_records(folder: Path, paths) -> dict:
    """sha256 and size of each existing file, by its path relative to ``folder``."""
    return {p.relative_to(folder).as_posix(): {"sha256": sha256_of(p), "bytes": p.stat().st_size}
            for p in paths if p.exists()}


def _libraries() -> dict:
    import brevitas

    return {"torch": torch.__version__, "brevitas": brevitas.__version__,
            "openvino": ov.__version__, "onnx": onnx.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def write_manifest(folder: Path, record: dict) -> None:
    paths = [path_of(folder, g, ext) for g in GRAPHS for ext in ("xml", "bin", "onnx")]
    record = dict(record, contract=contract(), files=_file_records(folder, paths), libraries=_libraries(),
                  created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    (folder / MANIFEST).write_text(json.dumps(record, indent=2) + "\n")


def build_from_qat(ckpt: Path) -> tuple[LiteMedSAM, dict]:
    """The quantized model a QAT checkpoint holds (any checkpoint ``make train-all`` or
    ``make qat-distill`` writes; ``training.qat.checkpoint``), and its manifest record."""
    from training.qat.checkpoint import rebuild

    blob = torch.load(str(ckpt), map_location="cpu", weights_only=False)
    model, structure = rebuild(blob)
    return model, {"method": "qat", "qat_checkpoint": {"path": str(ckpt), "sha256": sha256_of(ckpt)},
                   "structure": structure.as_dict(), "float_layers": list(structure.float_layers),
                   "stages": blob.get("stages"), "distillation": blob.get("distillation")}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=Path("models"))
    ap.add_argument("--weights", type=Path, default=DEFAULT_PATH)
    ap.add_argument("--ckpt", type=Path, help="QAT checkpoint (otherwise post-training quantization)")
    ap.add_argument("--fp32", action="store_true", help="write float models to MODELS/fp32")
    ap.add_argument("--runtime-decoder", action="store_true",
                    help="re-export only the runtime's float decoder graphs into the int8 MODELS folder")
    ap.add_argument("--calib", type=int, default=48, help="calibration slices for PTQ")
    ap.add_argument("--add-w7", action="store_true",
                    help="only add the 7-bit-weight encoder (encoder_w7) to the int8 MODELS folder")
    ap.add_argument("--w7-from", type=Path,
                    help="with --add-w7: take the encoder of a folder `make export WEIGHT_BITS=7` wrote")
    ap.add_argument("--weight-bits", type=int, default=8, choices=(7, 8),
                    help="PTQ: weight bits of the int8 encoder (7: immune to the 16-bit saturation of "
                         "int8 kernels without VNNI)")
    ap.add_argument("--distill-steps", type=int, default=0,
                    help="PTQ: steps of encoder distillation against the float model after calibration")
    args = ap.parse_args(argv)
    weights = ensure_weights(args.weights)
    source = {"path": weights.name, "sha256": sha256_of(weights)}
    if args.fp32:
        out = args.models / "fp32"
        export_float(build_lite_medsam(weights), out)
        write_manifest(out, {"precision": "fp32", "source_checkpoint": source})
        print(f"fp32 models in {out}")
        return
    if args.runtime_decoder:
        refresh_runtime_decoder(args.models, weights)
        print(f"runtime decoder graphs re-exported in {args.models}")
        return
    if args.add_w7:
        add_w7_encoder(args.models, weights, args.calib, args.w7_from)
        print(f"encoder_w7 added to {args.models}")
        return
    if args.ckpt:
        # A checkpoint has one set of weights: no 7-bit encoder from an earlier export may stay beside it
        # (the runtime then runs this 8-bit one on every int8 CPU).
        for ext in ("xml", "bin", "onnx"):
            path_of(args.models, ENCODER_W7, ext).unlink(missing_ok=True)
        model, record = build_from_qat(args.ckpt)
        float_source, float_from = float_copy(model), "the QAT checkpoint's weights"
    else:
        from training.ptq_recipe import post_training_quantize

        model, record = post_training_quantize(weights, args.calib, args.distill_steps, args.weight_bits)
        float_source, float_from = build_lite_medsam(weights), PRETRAINED_FLOAT
    folded = export_quant(model, args.models, float_source)
    record["runtime_decoder"] = {
        "graphs": [g.name for g in RUNTIME_DECODER], "precision": "float", "weights": float_from,
        "what": "the mask decoder factored into per-image and per-box work "
                "(training/model/factored_decoder.py); equals the plain float decoder up to rounding",
        "weights_stored_as": "f16 (f32 at run time)",
        "reference": "decoder (the plain decoder, int8 QCDQ): benchmarks and tests only"}
    write_manifest(args.models, dict(record, precision="int8", source_checkpoint=source,
                                     onnx={"format": "Brevitas QCDQ", "opset": OPSET,
                                           "constant_clips_folded": folded}))
    add_float_encoder(args.models, weights)
    if not args.ckpt and args.weight_bits == 8:
        add_w7_encoder(args.models, weights, args.calib)
    print(f"int8 models in {args.models}")


if __name__ == "__main__":
    main()
