"""What a compiled graph must offer, and OpenVINO's compile errors as one line."""
from __future__ import annotations

from pathlib import Path

from qmedsam.model.folder import EngineError
from qmedsam.model.spec import GraphSpec


def check_names(compiled, spec: GraphSpec) -> None:
    """:class:`EngineError` unless ``compiled`` has every input and output ``spec`` names."""
    have = ({n for p in compiled.inputs for n in p.get_names()}, {n for p in compiled.outputs for n in p.get_names()})
    for side, want, got in (("input", spec.inputs, have[0]), ("output", spec.outputs, have[1])):
        missing = [n for n in want if n not in got]
        if missing:
            raise EngineError(f"{spec.name} model has no {side} named {', '.join(missing)} "
                              f"(has {', '.join(sorted(got)) or 'none'}): re-export it with `make export`")


def compile_error(e: RuntimeError, folder: Path) -> EngineError:
    # OpenVINO's message opens with "Exception from <source file>" lines; the reason comes after
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    first = next((line for line in lines if not line.startswith("Exception from")), lines[0] if lines else type(e).__name__)
    return EngineError(f"cannot compile the models in {folder}: {first}")
