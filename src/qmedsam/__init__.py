"""QMedSAM runtime: box-prompted medical image segmentation on CPU with OpenVINO.

Only what ``predict.sh`` runs lives here; it imports the standard library, numpy,
openvino and cv2, nothing else (tests/runtime/test_layout.py checks it).
Evaluation is ``qmedsam_eval``; benchmarks, tools and training live outside ``src/``.
"""
__version__ = "0.1.0"
