"""QMedSAM runtime: box-prompted medical image segmentation on CPU with OpenVINO.

Imports only numpy, opencv and openvino (never torch).
"""
__version__ = "0.1.0"
