"""The one exporter: a graph specification (``qmedsam.model.spec``) and a torch module -> ONNX ->
OpenVINO IR, in float or as Brevitas QCDQ.  It knows where each graph's files go in a models folder;
what the graphs are made from is ``training.model_sources``, the manifest ``training.manifest_writer``.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import onnx
import openvino as ov
import torch

from qmedsam.model.spec import (BOXES, CELLS, DECODER_BOXES, DECODER_IMAGE, DECODER_PLAIN, DECODER_PROMPTS,
                                 ENCODER, MASKS, POINT_LABELS, POINTS,
                                 REFERENCE_FOLDER, SHIPPED, GraphSpec)
from training.model.factored_decoder import DecoderBoxes, DecoderImageState, full_cells
from training.model.lite_medsam import LiteMedSAM
from training.onnx_fold import fold_constant_clips, untie_dequant_constants

GRAPHS = (*SHIPPED, DECODER_PLAIN)
RUNTIME_DECODER = (DECODER_IMAGE, DECODER_BOXES)
OPSET = 17
GRAPH_EXTS = ("xml", "bin", "onnx")     # the files a graph may have in a models folder


def path_of(folder: Path, spec: GraphSpec, ext: str = "xml") -> Path:
    """Where a graph's file goes in a models folder: the runtime's graphs at its top, the ONNX
    files and the plain decoder in its reference folder (``qmedsam.model.spec``)."""
    ref = ext == "onnx" or spec is DECODER_PLAIN
    return (folder / REFERENCE_FOLDER if ref else folder) / f"{spec.name}.{ext}"


def _batch_axes(spec: GraphSpec) -> dict:
    """Dynamic box-batch axes of a decoder graph: its ``boxes`` input and every output."""
    return {name: {0: "B"} for name in (BOXES, *spec.outputs)}


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


def encoder_graph(spec: GraphSpec, model: LiteMedSAM):
    """One encoder graph of ``model`` under ``spec``'s name, as :func:`graphs` gives them."""
    image, _, _ = example_inputs()
    return spec, model.image_encoder, (image,), None


def factored_graphs(fmodel: LiteMedSAM):
    """The runtime's decoder graphs, (spec, module, args, dynamic axes) as :func:`graphs`; the
    per-box graph's windows are dynamic too (traced with the whole grid)."""
    _, emb, boxes = example_inputs()
    image_state = DecoderImageState(fmodel).eval()
    with torch.no_grad():
        state = image_state(emb)
    axes = dict(_batch_axes(DECODER_BOXES), **{CELLS: {0: "B", 1: "H", 2: "W"}, MASKS: {0: "B", 2: "H4", 3: "W4"}})
    return ((DECODER_IMAGE, image_state, (emb,), None),
            (DECODER_BOXES, DecoderBoxes(fmodel).eval(), (*state, boxes, full_cells(len(boxes))), axes))


def prompts_graph(model: LiteMedSAM):
    """The API's prompt decoder (``training/model/prompt_decoder.py``), (spec, module, args, axes) as
    :func:`graphs`; the number of points is dynamic."""
    from training.model.prompt_decoder import PromptDecoder

    _, emb, _ = example_inputs()
    args = (emb, torch.tensor([[[40.0, 50.0], [120.0, 90.0], [0.0, 0.0]]]), torch.tensor([[1.0, 0.0, -1.0]]),
            torch.zeros(1, 1, 256, 256), torch.ones(1))
    axes = {POINTS: {1: "N"}, POINT_LABELS: {1: "N"}}
    return DECODER_PROMPTS, PromptDecoder(model.prompt_encoder, model.mask_decoder).eval(), args, axes


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


def export_runtime_decoder(fmodel: LiteMedSAM, out: Path) -> None:
    """The runtime's float decoder graphs beside the int8 ones: their IR is what runs (the ONNX
    would only add size), with f16-stored weights (13 MB less in the image; masks vs the plain
    float decoder: mean Dice 0.9999 in f32 on real slices; bf16 rounds them more anyway)."""
    export_float(fmodel, out, factored_graphs(fmodel), keep_onnx=False, fp16_weights=True)


def export_quant(model: LiteMedSAM, out: Path, float_source: LiteMedSAM | None = None) -> dict[str, int]:
    """QCDQ export of a calibrated/trained quantized model, plus the float factored decoder from
    ``float_source`` (default: the model's own weights); returns folded clips per graph."""
    from training.model_sources import float_copy

    folded = {spec.name: export_qcdq(spec, module, args, dyn, out) for spec, module, args, dyn in graphs(model)}
    export_runtime_decoder(float_source or float_copy(model), out)
    return folded


def export_qcdq(spec: GraphSpec, module, args, dyn, out: Path) -> int:
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
