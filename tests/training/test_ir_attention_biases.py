"""Compact attention-bias tables in the encoder IR (training.ir_attention_biases): smaller, the
same results."""
import numpy as np
import openvino as ov
import pytest

from conftest import MODELS
from training.ir_attention_biases import compact_attention_biases

ONNX = MODELS / "reference" / "encoder.onnx"


@pytest.mark.skipif(not ONNX.exists(), reason="run `make export` first")
def test_compacting_the_biases_saves_megabytes_and_changes_no_result(tmp_path):
    core = ov.Core()
    x = np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)
    plain = ov.convert_model(str(ONNX))
    compact = ov.convert_model(str(ONNX))
    saved = compact_attention_biases(compact)
    assert saved > 3e6
    assert compact_attention_biases(compact) == 0                  # nothing left to compact
    for name, model in (("plain", plain), ("compact", compact)):
        ov.save_model(model, str(tmp_path / f"{name}.xml"), compress_to_fp16=False)
    sizes = {n: (tmp_path / f"{n}.bin").stat().st_size for n in ("plain", "compact")}
    assert sizes["plain"] - sizes["compact"] > 3e6, sizes
    out = {n: core.compile_model(str(tmp_path / f"{n}.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]
           for n in ("plain", "compact")}
    np.testing.assert_array_equal(out["plain"], out["compact"])
    committed = core.compile_model(str(MODELS / "encoder.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]
    np.testing.assert_array_equal(committed, out["compact"])      # the shipped encoder is the compact one
