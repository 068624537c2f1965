"""A models folder: where it is, whether it holds what this runtime binds to, and its id.

The folder is ``--models``, the ``QMEDSAM_MODELS`` environment variable, or the package's own
``qmedsam/models`` (in a checkout a link to the repository's ``models/``; in the image, the files).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from qmedsam.model.spec import ENCODERS, MANIFEST, REQUIRED, binding, contract

PACKAGE_MODELS = Path(__file__).parent.parent / "models"
MODEL_FILES = tuple(f for graph in REQUIRED for f in graph.files)


class EngineError(RuntimeError):
    """The models cannot be found, loaded or compiled; the message is one line."""


def default_models() -> Path:
    env = os.environ.get("QMEDSAM_MODELS")
    return Path(env) if env else PACKAGE_MODELS


def check_folder(folder: Path, hint: str = "make export") -> Path:
    """``folder`` when it holds every graph the runtime needs under this runtime's contract, else
    :class:`EngineError` naming the folder and what is missing (``hint``: the command that makes it)."""
    missing = [f for f in MODEL_FILES if not (folder / f).is_file()]
    if missing:
        raise EngineError(f"models not found in {folder} (missing {', '.join(missing)}): run `{hint}` "
                          "or name a models folder with --models or QMEDSAM_MODELS")
    # folders exported before the contract was recorded pass, and so do those whose recorded roles
    # or precisions differ only in their text
    try:
        recorded = json.loads((folder / MANIFEST).read_text()).get("contract")
    except (OSError, ValueError):
        recorded = None
    if recorded is not None and binding(recorded) != binding(contract()):
        raise EngineError(f"{folder}: its models were exported for another model contract than this runtime's "
                          f"(qmedsam/model/spec.py): re-export them with `{hint}`")
    return folder


def has_graph(folder: Path, name: str) -> bool:
    """Whether ``folder`` holds the encoder graph ``name`` (.xml and .bin), e.g. the optional float one."""
    return all((folder / f).is_file() for f in ENCODERS[name].files)


def models_id(folder: Path) -> str:
    """A short id of a models folder: the sha256 of its manifest (which records every file's sha256)."""
    try:
        return hashlib.sha256((folder / MANIFEST).read_bytes()).hexdigest()[:12]
    except OSError:
        return ""
