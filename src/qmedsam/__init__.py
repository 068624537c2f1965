"""QMedSAM runtime: box-prompted medical image segmentation on CPU with OpenVINO.

Only what ``predict.sh`` runs lives here; it imports the standard library, numpy,
openvino and cv2, nothing else (tests/runtime/test_layout.py checks it).
Evaluation is ``qmedsam_eval``; benchmarks, tools and training live outside ``src/``.

The Python API (:mod:`qmedsam.api`): ``qmedsam.Segmenter``, ``qmedsam.CaseError``.  It is
imported on first use, so that the command line starts loading its models before OpenCV loads.
"""
__version__ = "0.1.0"
__all__ = ["Segmenter", "PromptSession", "CaseError", "EngineError"]


def __getattr__(name: str):
    if name in __all__:
        from qmedsam import api

        return getattr(api, name)
    raise AttributeError(f"module 'qmedsam' has no attribute {name!r}")
