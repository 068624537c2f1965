"""QMedSAM runtime: box-prompted medical image segmentation on CPU with OpenVINO.

Imports only numpy and openvino at run time (never torch or OpenCV); evaluation modules add scipy, matplotlib, SimpleITK.
"""
__version__ = "0.1.0"
