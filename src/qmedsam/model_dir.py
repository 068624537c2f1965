"""Where the predictor's models are: an explicit folder (``--models``), the ``QMEDSAM_MODELS``
environment variable, or the package's own data folder ``qmedsam/models`` (in a checkout a
link to the repository's ``models/``; in the image and in an installed package, the files)."""
from __future__ import annotations

import os
from pathlib import Path

from qmedsam.engine import GRAPHS, EngineError

PACKAGE_MODELS = Path(__file__).with_name("models")
MODEL_FILES = tuple(f"{graph}.{ext}" for graph in GRAPHS for ext in ("xml", "bin"))


def default_models() -> Path:
    env = os.environ.get("QMEDSAM_MODELS")
    return Path(env) if env else PACKAGE_MODELS


def model_dir(base: Path, precision: str) -> Path:
    """The folder holding the models of ``precision`` ('int8' or 'auto': ``base``, 'fp32':
    ``base/fp32``); raises :class:`EngineError` naming the folder and what is missing."""
    folder = base / "fp32" if precision == "fp32" else base
    missing = [f for f in MODEL_FILES if not (folder / f).is_file()]
    if missing:
        hint = "make export-fp32" if precision == "fp32" else "make export"
        raise EngineError(f"models not found in {folder} (missing {', '.join(missing)}): run `{hint}` "
                          "or name a models folder with --models or QMEDSAM_MODELS")
    return folder


def has_graph(folder: Path, name: str) -> bool:
    """Whether ``folder`` holds the graph ``name`` (.xml and .bin), e.g. the optional float encoder."""
    return all((folder / f"{name}.{ext}").is_file() for ext in ("xml", "bin"))
