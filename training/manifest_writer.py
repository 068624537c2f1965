"""``models/manifest.json``: how a models folder was made (from ``training.model_sources``' records),
the runtime's graph contract (``qmedsam.model_spec.contract``), the libraries, and the sha256 and
size of every graph file.  Written whole by an export, updated in place by its later steps."""
from __future__ import annotations

import datetime as dt
import json
import platform
from pathlib import Path

from qmedsam.model.spec import MANIFEST, contract
from tools.weights import sha256_of
from training.graph_export import GRAPH_EXTS, GRAPHS, path_of


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def file_records(folder: Path, paths) -> dict:
    """sha256 and size of each existing file, by its path relative to ``folder``."""
    return {p.relative_to(folder).as_posix(): {"sha256": sha256_of(p), "bytes": p.stat().st_size}
            for p in paths if p.exists()}


def graph_files(folder: Path, specs) -> list[Path]:
    return [path_of(folder, g, ext) for g in specs for ext in GRAPH_EXTS]


def libraries() -> dict:
    import brevitas
    import numpy as np
    import onnx
    import openvino as ov
    import torch

    return {"torch": torch.__version__, "brevitas": brevitas.__version__,
            "openvino": ov.__version__, "onnx": onnx.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def write_manifest(folder: Path, record: dict) -> None:
    """A new manifest: ``record`` plus the contract, every graph file's hash, libraries, time."""
    record = dict(record, contract=contract(), files=file_records(folder, graph_files(folder, GRAPHS)),
                  libraries=libraries(), created=now())
    (folder / MANIFEST).write_text(json.dumps(record, indent=2) + "\n")


def update_manifest(models: Path, graphs, **entries) -> None:
    """Record new ``graphs`` (their file hashes) and top-level ``entries`` in the folder's
    manifest, keeping the rest of it."""
    manifest = json.loads((models / MANIFEST).read_text())
    manifest.update(entries, contract=contract())
    manifest["files"].update(file_records(models, graph_files(models, graphs)))
    (models / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def read_manifest(models: Path) -> dict:
    return json.loads((models / MANIFEST).read_text())
