"""QMedSAM runtime: promptable medical image segmentation on CPU with OpenVINO.

Only what ``predict.sh`` runs lives here, by job: ``model`` (the compiled graphs), ``precision``
(which encoder, which arithmetic), ``image`` (one image and its prompts), ``segment`` (a case's
modes), ``cases`` (case files), ``run`` (a folder of cases, its pools and records), ``system``.
It imports the standard library, numpy, openvino and cv2, nothing else.  The Python API is
:mod:`qmedsam.api` (``qmedsam.Segmenter``), imported on first use.
"""
__version__ = "0.1.0"
__all__ = ["Segmenter", "PromptSession", "CaseError", "EngineError"]


def __getattr__(name: str):
    if name in __all__:
        from qmedsam import api

        return getattr(api, name)
    raise AttributeError(f"module 'qmedsam' has no attribute {name!r}")
