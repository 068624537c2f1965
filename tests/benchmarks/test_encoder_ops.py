"""bench-encoder-ops' grouping of OpenVINO's per-node counters."""
from benchmarks.bench_encoder_ops import breakdown, group_of, precision_of


def test_nodes_go_to_their_encoder_group():
    assert group_of("/layers.0/blocks.0/conv1/c/layer/Conv/WithoutBiases") == "layers.0"
    assert group_of("/patch_embed/seq/seq.2/c/layer/Conv/WithoutBiases") == "patch_embed"
    assert group_of("/neck/neck.2/layer/Conv/WithoutBiases") == "neck"
    assert group_of("/layers.10/x") == "other" and group_of("image_embedding") == "other"


def test_integer_kernels_are_int8_and_the_rest_float():
    assert precision_of("brgconv_avx512_1x1_I8") == "int8" and precision_of("brgemm_avx512_i8") == "int8"
    assert precision_of("jit_uni_u8") == "int8"
    assert precision_of("brgconv_avx512_1x1_f32") == "float" and precision_of("jit_avx512_bf16") == "float"


def test_breakdown_sums_by_group_and_precision():
    nodes = [("/layers.0/a", "brgconv_avx512_1x1_f32", 2.0), ("/layers.0/b", "brgemm_avx512_I8", 1.0),
             ("/layers.0/c", "jit_avx512_f32", 0.5), ("/Transpose", "unknown_f32", 0.25)]
    assert breakdown(nodes) == {"layers.0": {"int8": 1.0, "float": 2.5}, "other": {"int8": 0.0, "float": 0.25}}
