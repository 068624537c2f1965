"""``make nncf-anchor``: NNCF's int8 encoders (8-bit, and 7-bit by its overflow fix) in a
candidate folder the runtime can read, on a tiny float graph with the encoder's tensor names."""
import json

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

from qmedsam.model.spec import ENCODER, ENCODER_W7, MANIFEST
from tools.weights import sha256_of
from training.nncf_anchor import float_layer_count, quantize, write_candidate

pytest.importorskip("nncf")


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """image (1, 3, 256, 256) -> conv 4x4/4 -> GELU -> 1x1 conv -> image_embedding (1, 256, 64, 64)."""
    rng = np.random.default_rng(0)
    x = ops.parameter([1, 3, 256, 256], np.float32, name="image")
    x.output(0).set_names({"image"})
    h = ops.gelu(ops.convolution(x, ops.constant(rng.normal(size=(16, 3, 4, 4)).astype(np.float32)),
                                 [4, 4], [0, 0], [0, 0], [1, 1]), "erf")
    y = ops.convolution(h, ops.constant(rng.normal(size=(256, 16, 1, 1)).astype(np.float32)),
                        [1, 1], [0, 0], [0, 0], [1, 1])
    y.output(0).set_names({"image_embedding"})
    path = tmp_path_factory.mktemp("float") / "encoder.xml"
    ov.save_model(ov.Model([y], [x]), path, compress_to_fp16=False)
    images = [rng.random((1, 3, 256, 256), dtype=np.float32) for _ in range(3)]
    return path, images


def _int8_weights(model) -> list[np.ndarray]:
    return [op.get_data() for op in model.get_ordered_ops()
            if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8]


@pytest.mark.parametrize("bits, low, high", [(8, -127, 127), (7, -64, 64)])
def test_every_layer_is_quantized_with_weights_in_the_asked_bits(tiny_encoder, bits, low, high):
    path, images = tiny_encoder
    q = quantize(path, images, bits)
    weights = _int8_weights(q)
    assert len(weights) == 2 and float_layer_count(q) == 0
    assert all(w.min() >= low and w.max() <= high for w in weights)
    if bits == 8:
        assert max(np.abs(w).max() for w in weights) > 64          # 8 bits are used, not 7
    out = ov.Core().compile_model(q, "CPU")(images[0])[0]
    ref = ov.Core().compile_model(str(path), "CPU")(images[0])[0]
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 0.05


def test_the_candidate_folder_is_the_models_folder_with_nncf_encoders(tiny_encoder, tmp_path):
    path, images = tiny_encoder
    models = tmp_path / "models"
    (models / "reference").mkdir(parents=True)
    (models / "reference" / "decoder.onnx").write_bytes(b"x")
    (models / "decoder_image.xml").write_text("<net/>")
    ov.save_model(ov.Core().read_model(path), models / "encoder.xml")
    (models / MANIFEST).write_text(json.dumps({"method": "brevitas", "files": {}}))
    out = tmp_path / "nncf"
    write_candidate(models, out, {ENCODER.name: quantize(path, images, 8), ENCODER_W7.name: quantize(path, images, 7)},
                    {"method": "NNCF quantize"})
    assert not (out / "reference").exists() and (out / "decoder_image.xml").read_text() == "<net/>"
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["method"] == "brevitas"                       # the copied folder's own record stays
    for spec, bits in ((ENCODER, 8), (ENCODER_W7, 7)):
        assert manifest[spec.name]["weight_bits"] == bits and manifest[spec.name]["float_layers"] == 0
        assert manifest["files"][f"{spec.name}.xml"]["sha256"] == sha256_of(out / f"{spec.name}.xml")
        graph = ov.Core().read_model(out / f"{spec.name}.xml")          # the model contract's tensor names
        assert [i.get_any_name() for i in graph.inputs] == list(spec.inputs)
        assert [o.get_any_name() for o in graph.outputs] == list(spec.outputs)
    assert len(_int8_weights(ov.Core().read_model(out / "encoder_w7.xml"))) == 2
