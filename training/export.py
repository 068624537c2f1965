"""``make export`` / ``make export-fp32``: LiteMedSAM -> ONNX -> OpenVINO IR, with a manifest.

int8: Brevitas QCDQ ONNX of the quantized encoder and decoder (from a QAT checkpoint with
``--ckpt``, else post-training quantization of the pretrained weights on real public slices),
then IR; beside them the float encoder and the 7-bit-weight encoder.  fp32: the same graphs in
float (``MODELS/fp32``), for comparison.  Both: the factored mask decoder the runtime runs
(``decoder_image``, once per image, ``decoder_boxes``, per block of boxes), in float.

The layers: ``training.model_sources`` (what a model is made from, and a record of how),
``training.graph_export`` (spec -> ONNX -> IR), ``training.manifest_writer``; this module
strings them into the steps of an export and holds the command line.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from qmedsam.model.spec import DECODER_PROMPTS, ENCODER, ENCODER_FLOAT, ENCODER_W7, MANIFEST
from tools.weights import DEFAULT_PATH, ensure_weights
from training import model_sources
from training.graph_export import (GRAPH_EXTS, OPSET, RUNTIME_DECODER, encoder_graph, export_float, prompts_graph,
                                   export_qcdq, export_quant, export_runtime_decoder, path_of)
from training.manifest_writer import now, read_manifest, update_manifest, write_manifest
from training.model.lite_medsam import LiteMedSAM, build_lite_medsam
from training.model_sources import PRETRAINED_FLOAT, ModelSource


def export_fp32(weights: Path, out: Path) -> None:
    source = model_sources.pretrained(weights)
    export_float(source.model, out)
    write_manifest(out, source.record)


def export_int8(source: ModelSource, models: Path, weights: Path) -> None:
    """The int8 folder of one source: its QCDQ graphs, the runtime's float decoder graphs, the
    manifest, and the float encoder beside them."""
    folded = export_quant(source.model, models, source.decoder_model)
    record = dict(source.record)
    record["runtime_decoder"] = {
        "graphs": [g.name for g in RUNTIME_DECODER], "precision": "float", "weights": source.decoder_weights,
        "what": "the mask decoder factored into per-image and per-box work "
                "(training/model/factored_decoder.py); equals the plain float decoder up to rounding",
        "weights_stored_as": "f16 (f32 at run time)",
        "reference": "decoder (the plain decoder, int8 QCDQ): benchmarks and tests only"}
    write_manifest(models, dict(record, precision="int8", source_checkpoint=model_sources.checkpoint_record(weights),
                                onnx={"format": "Brevitas QCDQ", "opset": OPSET, "constant_clips_folded": folded}))
    add_float_encoder(models, weights)
    add_prompt_decoder(models, weights)


def add_w7_encoder(models: Path, weights: Path, n_calib: int, source: Path | None = None,
                   ckpt: Path | None = None) -> None:
    """The post-training recipe again with 7-bit weights, its encoder exported as ``encoder_w7``
    (what ``--precision auto`` runs on AVX-512 CPUs without VNNI; qmedsam.precision.setting) into an
    int8 models folder and recorded in its manifest (part of ``make export``; ``--add-w7`` on its
    own).  ``source``: a folder ``make export WEIGHT_BITS=7`` wrote (its encoder is taken as it is
    instead of running the recipe again), or a models folder that holds an ``encoder_w7`` (taken
    with its record: a QAT checkpoint's export keeping the post-training 7-bit encoder).
    ``ckpt``: a 7-bit QAT checkpoint (``make qat-distill DISTILL_ARGS='--weight-bits 7'``) whose
    encoder is exported instead."""
    if ckpt is not None:
        qat = model_sources.qat_checkpoint(ckpt)
        record = qat.record
        if _weight_bits(record) != 7:
            raise SystemExit(f"{ckpt}: a checkpoint of {_weight_bits(record)}-bit weights, not 7")
        folded = export_qcdq(*encoder_graph(ENCODER_W7, qat.model), models)
    elif source is not None:
        record = read_manifest(source)
        if ENCODER_W7.name in record:
            _copy_graph(source, ENCODER_W7, models)
            update_manifest(models, [ENCODER_W7],
                            **{ENCODER_W7.name: dict(record[ENCODER_W7.name], copied_from=str(source))})
            return
        if _weight_bits(record) != 7:
            raise SystemExit(f"{source}: its manifest records neither 7-bit weights (make export WEIGHT_BITS=7, "
                             f"or a checkpoint of make qat-distill DISTILL_ARGS='--weight-bits 7') nor an {ENCODER_W7.name}")
        _copy_graph(source, ENCODER, models, ENCODER_W7)
        folded = record["onnx"]["constant_clips_folded"][ENCODER.name]
    else:
        ptq = model_sources.post_training(weights, n_calib, 0, weight_bits=7)
        record = ptq.record
        folded = export_qcdq(*encoder_graph(ENCODER_W7, ptq.model), models)
    if record.get("method") == "qat":
        made = {"method": "quantization-aware training with 7-bit weight quantizers (narrow range, |q| <= 63)",
                "qat_checkpoint": record["qat_checkpoint"], "distillation": record.get("distillation")}
    else:
        made = {"method": "the same post-training recipe with 7-bit weight quantizers (narrow range, |q| <= 63)",
                "encoder_steps": record["encoder_steps"], "encoder_agreement": record["encoder_agreement"]}
    update_manifest(models, [ENCODER_W7], **{ENCODER_W7.name: {
        "graph": ENCODER_W7.name, "weight_bits": 7, "when": ENCODER_W7.role, **made,
        "from": str(source or ckpt or "make export"), "float_layers": record["float_layers"],
        "constant_clips_folded": folded}})


def _weight_bits(record: dict) -> int | None:
    """The encoder's weight bits a manifest records (a post-training export, or a QAT checkpoint's structure)."""
    return record.get("weight_bits", (record.get("structure") or {}).get("weight_bits"))


def _copy_graph(source: Path, spec, models: Path, as_spec=None) -> None:
    """Copy one graph's files from ``source`` into ``models`` (as ``as_spec``'s, default its own)."""
    path_of(models, spec, "onnx").parent.mkdir(parents=True, exist_ok=True)
    for ext in GRAPH_EXTS:
        if path_of(source, spec, ext).exists():
            shutil.copyfile(path_of(source, spec, ext), path_of(models, as_spec or spec, ext))


def export_float_encoder(pretrained: LiteMedSAM, out: Path) -> dict:
    """The float encoder the runtime runs on CPUs where int8 is slow (``qmedsam.precision.setting``):
    the pretrained float weights, stored as f16 (f32 at run time), beside the int8 models.
    Returns its manifest record."""
    export_float(pretrained, out, [encoder_graph(ENCODER_FLOAT, pretrained)], keep_onnx=False, fp16_weights=True)
    return {"graph": ENCODER_FLOAT.name, "precision": "float", "weights": PRETRAINED_FLOAT,
            "weights_stored_as": "f16 (f32 at run time)",
            "when": "--precision auto on CPUs without AVX-512, VNNI or AMX (qmedsam/encoder_choice.py)"}


def add_float_encoder(models: Path, weights: Path) -> None:
    """Export the float encoder into an int8 models folder and record it in its manifest (part of
    ``make export``; also usable on its own for a folder exported before it existed)."""
    record = export_float_encoder(build_lite_medsam(weights), models)
    update_manifest(models, [ENCODER_FLOAT], float_encoder=record)


def refresh_runtime_decoder(models: Path, weights: Path) -> None:
    """Re-export the runtime's float decoder graphs (``RUNTIME_DECODER``) into an int8 models
    folder whose manifest says they come from the pretrained weights, and update its file records;
    the int8 graphs stay byte-identical.  ``make export-decoder``: a change to
    ``training/model/factored_decoder.py`` without the PTQ's minutes; ``make export`` writes the
    same graphs."""
    record = read_manifest(models).get("runtime_decoder", {})
    if record.get("weights") != PRETRAINED_FLOAT:
        raise SystemExit(f"{models}: its decoder graphs come from {record.get('weights') or 'unrecorded weights'}, "
                         f"not {PRETRAINED_FLOAT}: run `make export` (with CKPT= for a QAT checkpoint)")
    export_runtime_decoder(build_lite_medsam(weights), models)
    update_manifest(models, RUNTIME_DECODER, runtime_decoder=dict(record, refreshed=now()))


def add_prompt_decoder(models: Path, weights: Path) -> None:
    """The API's prompt decoder (points, box corners, mask input) from the pretrained weights, float
    with f16-stored weights, into a models folder and its manifest (part of ``make export``;
    ``make export-prompts`` on its own).  The command line never loads it; the image leaves it out."""
    export_float(build_lite_medsam(weights), models, [prompts_graph(build_lite_medsam(weights))], keep_onnx=False,
                 fp16_weights=True)
    update_manifest(models, [DECODER_PROMPTS], prompt_decoder={
        "graph": DECODER_PROMPTS.name, "precision": "float", "weights": PRETRAINED_FLOAT,
        "weights_stored_as": "f16 (f32 at run time)", "used_by": "qmedsam.api PromptSession (points, mask input)"})


def drop_w7_encoder(models: Path) -> None:
    """A checkpoint has one set of weights: no 7-bit encoder from an earlier export may stay beside
    it (the runtime then runs its 8-bit one on every int8 CPU)."""
    for ext in GRAPH_EXTS:
        path_of(models, ENCODER_W7, ext).unlink(missing_ok=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=Path("models"))
    ap.add_argument("--weights", type=Path, default=DEFAULT_PATH)
    ap.add_argument("--ckpt", type=Path, help="QAT checkpoint (otherwise post-training quantization)")
    ap.add_argument("--ckpt-w7", type=Path,
                    help="a 7-bit QAT checkpoint, exported as the folder's encoder_w7 (beside the post-training "
                         "8-bit encoder, or --ckpt's, or with --add-w7 into an existing folder)")
    ap.add_argument("--fp32", action="store_true", help="write float models to MODELS/fp32")
    ap.add_argument("--runtime-decoder", action="store_true",
                    help="re-export only the runtime's float decoder graphs into the int8 MODELS folder")
    ap.add_argument("--prompt-decoder", action="store_true",
                    help="only add the API's prompt decoder (points, mask input) to the MODELS folder")
    ap.add_argument("--calib", type=int, default=48, help="calibration slices for PTQ")
    ap.add_argument("--add-w7", action="store_true",
                    help="only add the 7-bit-weight encoder (encoder_w7) to the int8 MODELS folder")
    ap.add_argument("--w7-from", type=Path,
                    help="with --add-w7: take the encoder of a folder `make export WEIGHT_BITS=7` wrote, or the "
                         "encoder_w7 of a models folder")
    ap.add_argument("--weight-bits", type=int, default=8, choices=(7, 8),
                    help="PTQ: weight bits of the int8 encoder (7: immune to the 16-bit saturation of "
                         "int8 kernels without VNNI)")
    ap.add_argument("--distill-steps", type=int, default=0,
                    help="PTQ: steps of encoder distillation against the float model after calibration")
    args = ap.parse_args(argv)
    weights = ensure_weights(args.weights)
    if args.fp32:
        export_fp32(weights, args.models / "fp32")
        print(f"fp32 models in {args.models / 'fp32'}")
    elif args.prompt_decoder:
        add_prompt_decoder(args.models, weights)
        print(f"prompt decoder in {args.models}")
    elif args.runtime_decoder:
        refresh_runtime_decoder(args.models, weights)
        print(f"runtime decoder graphs re-exported in {args.models}")
    elif args.add_w7:
        add_w7_encoder(args.models, weights, args.calib, args.w7_from, args.ckpt_w7)
        print(f"{ENCODER_W7.name} added to {args.models}")
    else:
        if args.ckpt:
            drop_w7_encoder(args.models)
            source = model_sources.qat_checkpoint(args.ckpt)
        else:
            source = model_sources.post_training(weights, args.calib, args.distill_steps, args.weight_bits)
        export_int8(source, args.models, weights)
        if args.ckpt_w7:
            add_w7_encoder(args.models, weights, args.calib, ckpt=args.ckpt_w7)
        elif not args.ckpt and args.weight_bits == 8:
            add_w7_encoder(args.models, weights, args.calib)
        print(f"int8 models in {args.models}")


if __name__ == "__main__":
    main()
