"""Where the predictor's models are: an explicit folder (``--models``), the ``QMEDSAM_MODELS``
environment variable, or the package's own data folder ``qmedsam/models`` (in a checkout a
link to the repository's ``models/``; in the image and in an installed package, the files)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from qmedsam.engine import GRAPHS, EngineError
from qmedsam.model_spec import ENCODERS, MANIFEST, binding, contract

PACKAGE_MODELS = Path(__file__).with_name("models")
MODEL_FILES = tuple(f for graph in GRAPHS for f in graph.files)


def default_models() -> Path:
    env = os.environ.get("QMEDSAM_MODELS")
    return Path(env) if env else PACKAGE_MODELS


def model_dir(base: Path, precision: str) -> Path:
    """The folder holding the models of ``precision`` ('int8' or 'auto': ``base``, 'fp32':
    ``base/fp32``); raises :class:`EngineError` naming the folder and what is missing."""
    folder = base / "fp32" if precision == "fp32" else base
    missing = [f for f in MODEL_FILES if not (folder / f).is_file()]
    hint = "make export-fp32" if precision == "fp32" else "make export"
    if missing:
        raise EngineError(f"models not found in {folder} (missing {', '.join(missing)}): run `{hint}` "
                          "or name a models folder with --models or QMEDSAM_MODELS")
    _check_contract(folder, hint)
    return folder


def _check_contract(folder: Path, hint: str) -> None:
    """A folder whose manifest records another model contract (graph or tensor names) than this
    runtime's is refused in one line; folders exported before the contract was recorded pass, and
    so do those whose recorded roles or precisions differ only in their text."""
    try:
        recorded = json.loads((folder / MANIFEST).read_text()).get("contract")
    except (OSError, ValueError):
        return
    if recorded is not None and binding(recorded) != binding(contract()):
        raise EngineError(f"{folder}: its models were exported for another model contract than this runtime's "
                          f"(qmedsam/model_spec.py): re-export them with `{hint}`")


def has_graph(folder: Path, name: str) -> bool:
    """Whether ``folder`` holds the encoder graph ``name`` (.xml and .bin), e.g. the optional float one."""
    return all((folder / f).is_file() for f in ENCODERS[name].files)
