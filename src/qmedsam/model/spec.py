"""The model contract: the graphs of a models folder, their files and their tensor names.

``make export`` (``training/export.py``) writes every graph by these names and records this
specification in the folder's ``manifest.json``; the engine binds its inputs and outputs by
them, the models-folder check and the image test take their file lists from here, and the
image copies the folder whole.  Renaming a graph or a tensor is a change on one line here.

The runtime's folder holds only what the predictor runs; the QCDQ ONNX files and the plain
decoder (the reference the factored one is tested and benchmarked against) are written to
its ``reference/`` subfolder, which the image leaves out.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class GraphSpec:
    name: str                        # file stem: NAME.xml / NAME.bin
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    precision: str                   # 'int8' or 'float' (the weights the graph computes with)
    role: str

    @property
    def files(self) -> tuple[str, str]:
        return f"{self.name}.xml", f"{self.name}.bin"

    def as_dict(self) -> dict:
        return dict(asdict(self), inputs=list(self.inputs), outputs=list(self.outputs))


# Tensor names more than one graph shares.
EMBEDDING, BOXES, CELLS, MASKS = "image_embedding", "boxes", "cells", "low_res_masks"
# The per-image decoder state, one tensor per part (training/model/factored_decoder.py), handed
# from the per-image graph to the per-box graph without a copy.
DECODER_STATE = tuple(f"state_{p}" for p in ("k1", "q1", "v1", "g0", "kb2", "vb2", "qb2", "h1", "w2",
                                              "kb3", "vb3", "tb", "cols"))

ENCODER = GraphSpec("encoder", ("image",), (EMBEDDING,), "int8",
                    "image (1,3,256,256) -> embedding, 8-bit weights: --precision int8 on CPUs with VNNI or AMX")
ENCODER_FLOAT = GraphSpec("encoder_float", ENCODER.inputs, ENCODER.outputs, "float",
                          "the same graph from the pretrained float weights (f16-stored); run where int8 "
                          "is slow (qmedsam.precision.setting)")
ENCODER_W7 = GraphSpec("encoder_w7", ENCODER.inputs, ENCODER.outputs, "int8",
                       "the int8 encoder with 7-bit weights, whose sums never saturate: --precision auto "
                       "wherever int8 pays, and --precision int8 where kernels lack VNNI (qmedsam.precision.setting)")
DECODER_IMAGE = GraphSpec("decoder_image", (EMBEDDING,), DECODER_STATE, "float",
                          "the decoder's per-image work, once per image")
DECODER_BOXES = GraphSpec("decoder_boxes", (*DECODER_STATE, BOXES, CELLS), (MASKS, "iou_predictions"),
                          "float", "the decoder's per-box work, per block of boxes (B,1,4) and their windows "
                          "(B,H,W) of 64-grid cells -> the windows' logits (B,1,4H,4W); all cells: (B,1,256,256)")
# SAM's whole prompt interface (points with labels, box corners, a low-res mask), float, one prompt
# per call: the API's PromptSession.predict with points or a mask; the command line never loads it.
POINTS, POINT_LABELS, MASK_INPUT, HAS_MASK = "point_coords", "point_labels", "mask_input", "has_mask_input"
DECODER_PROMPTS = GraphSpec("decoder_prompts", (EMBEDDING, POINTS, POINT_LABELS, MASK_INPUT, HAS_MASK),
                            (MASKS, "iou_predictions"), "float",
                            "embedding (1,256,64,64), points (1,N,2) in 256-space with SAM's labels (1,N), "
                            "a low-res mask (1,1,256,256) and whether to use it (1,) -> logits (1,1,256,256), IoU")
DECODER_PLAIN = GraphSpec("decoder", (EMBEDDING, BOXES), (MASKS,), "int8",
                          "the plain, unfactored decoder: a reference for tests and benchmarks, not shipped")

REQUIRED = (ENCODER, DECODER_IMAGE, DECODER_BOXES)         # every folder the predictor reads
SHIPPED = (ENCODER, ENCODER_W7, ENCODER_FLOAT, DECODER_IMAGE, DECODER_BOXES)
REFERENCE_FOLDER = "reference"                             # ONNX files and DECODER_PLAIN
MANIFEST = "manifest.json"
ENCODERS = {g.name: g for g in (ENCODER, ENCODER_W7, ENCODER_FLOAT)}   # interchangeable in the encoder's place


def shipped_files() -> list[str]:
    """The files of the runtime's models folder, as the image holds them."""
    return sorted([f for g in SHIPPED for f in g.files] + [MANIFEST])


def contract() -> dict:
    """The specification as the manifest records it (roles and precisions included, for readers)."""
    return {"graphs": [g.as_dict() for g in SHIPPED], "decoder_state": list(DECODER_STATE),
            "reference": {"folder": REFERENCE_FOLDER, "graphs": [DECODER_PLAIN.as_dict()]}}


def binding(recorded: dict) -> dict:
    """What of a recorded contract the engine binds by: each graph's file stem and tensor names
    (a role or precision text may change without a re-export)."""
    def names(graphs):
        return [[g.get("name"), list(g.get("inputs", ())), list(g.get("outputs", ()))] for g in graphs]

    return {"graphs": names(recorded.get("graphs", ())), "decoder_state": list(recorded.get("decoder_state", ())),
            "reference": names(recorded.get("reference", {}).get("graphs", ()))}
