"""Reading which precisions the compiled OpenVINO CPU graph really runs."""
from collections import Counter

import openvino as ov

INT8 = ("i8", "u8")


def runtime_ops(xml, config=None):
    compiled = ov.Core().compile_model(str(xml), "CPU", config or {"INFERENCE_PRECISION_HINT": "f32"})
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        yield (info["layerType"].astype(str), info["runtimePrecision"].astype(str),
               info["originalLayersNames"].astype(str))


def precision_table(xml) -> Counter:
    return Counter((t, p) for t, p, _ in runtime_ops(xml) if t in ("Convolution", "FullyConnected",
                                                                     "Deconvolution", "MatMul", "Subgraph"))
