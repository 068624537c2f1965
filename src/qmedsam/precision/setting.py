"""``--precision`` resolved once: which models folder, which float arithmetic, and how each case runs.

'fp32' runs the float models folder (``MODELS/fp32``) in f32.  'int8' runs an int8 encoder
unguarded: the 8-bit one where the CPU sums int8 products in 32 bits, the 7-bit one
(``encoder_w7``: 255 * 63 * 2 < 2^15) where it sums in 16 bits and 8-bit weights saturate.
'auto' prices each case (:mod:`qmedsam.precision.policy`): the float encoder, or the 7-bit int8
encoder probed by the guard.  Nothing outside this module compares the setting's name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from qmedsam.model.folder import check_folder, has_graph
from qmedsam.model.model import FLOAT_OPS
from qmedsam.model.spec import ENCODER, ENCODER_FLOAT, ENCODER_W7
from qmedsam.precision.cpu import CpuFacts
from qmedsam.precision.policy import Plan, plan_case

PRECISIONS = ("auto", "int8", "fp32")
INT8_ENCODER, W7_ENCODER, FLOAT_ENCODER = ENCODER.name, ENCODER_W7.name, ENCODER_FLOAT.name
OWN_ENCODER = ENCODER.name        # a folder's own encoder graph: int8 in MODELS, float in MODELS/fp32


def choose_encoder(precision: str, cpu: CpuFacts | None = None) -> tuple[str, str]:
    """(encoder graph, reason) for ``precision`` whatever the case; 'fp32' runs the float folder's own."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} not in {PRECISIONS}")
    if precision == "fp32":
        return OWN_ENCODER, "--precision fp32"
    cpu = cpu or CpuFacts.here()
    if precision == "int8":
        if cpu.saturates:
            return W7_ENCODER, ("--precision int8, 7-bit weights: this CPU's int8 sums are 16-bit (no VNNI or AMX) "
                                "and saturate on 8-bit weights")
        return INT8_ENCODER, "--precision int8"
    if cpu.int8_pays:
        return W7_ENCODER, ("int8, 7-bit weights: this CPU has fast int8 arithmetic (AVX-512, VNNI or AMX), and "
                            "7-bit weights give the same int8 sums with or without VNNI (8-bit ones saturate "
                            "without it)")
    return FLOAT_ENCODER, "float: this CPU has no AVX-512, VNNI or AMX, where the int8 encoder is slower"


def float_ops_for(precision: str, requested: str = "auto", cpu: CpuFacts | None = None) -> str:
    """The arithmetic of the operations the graphs leave in float: what was asked, else OpenVINO's
    choice ('auto': bf16 where the CPU has it natively) for int8, f32 for 'fp32' and where the ISA
    cap leaves no bf16 instructions (OpenVINO would emulate it)."""
    if requested not in FLOAT_OPS:
        raise ValueError(f"float ops {requested!r} not in {FLOAT_OPS}")
    if requested != "auto":
        return requested
    cpu = cpu or CpuFacts.here()
    return "f32" if precision == "fp32" or not cpu.bf16_allowed else "auto"


@dataclass(frozen=True)
class Precision:
    """A ``--precision`` setting resolved against a models folder and this CPU (:meth:`resolve`)."""

    setting: str
    folder: Path                      # the models folder it runs
    float_ops: str                    # ModelSettings.float_ops
    every_case: Plan | None           # the plan of every case; None: priced per case
    cpu: CpuFacts = field(default_factory=CpuFacts.here)
    why: str = ""                     # why every case runs its encoder (the -v start-up line)

    @staticmethod
    def resolve(setting: str, models: Path, float_ops: str = "auto", cpu: CpuFacts | None = None) -> "Precision":
        """Raises :class:`~qmedsam.model.folder.EngineError` where the folder lacks what it needs."""
        cpu = cpu or CpuFacts.here()
        ops = float_ops_for(setting, float_ops, cpu)
        if setting == "fp32":
            folder = check_folder(models / "fp32", "make export-fp32")
            return Precision(setting, folder, ops, Plan(OWN_ENCODER, False, "", "fp32"), cpu, "--precision fp32")
        folder = check_folder(models)
        if setting == "auto" and has_graph(folder, FLOAT_ENCODER):
            return Precision(setting, folder, ops, None, cpu)
        encoder, why = choose_encoder(setting, cpu)
        if not has_graph(folder, encoder):              # a models folder exported before that encoder
            encoder, why = INT8_ENCODER, f"int8: {folder} has no {encoder}.xml"
        return Precision(setting, folder, ops, Plan(encoder, False, "", setting), cpu, why)

    def plan(self, is_3d: bool, boxes, modality: str = "") -> Plan:
        """How a case runs, from its raw boxes (read or peeked) alone."""
        if self.every_case is not None:
            return self.every_case
        return plan_case(is_3d, boxes, cpu=self.cpu, has_int8=has_graph(self.folder, W7_ENCODER), modality=modality)

    def first_graphs(self, is_3d: bool, boxes, modality: str = "") -> tuple[str, str | None, str]:
        """(encoder graph to load up front, another to load beside it or None, why) for a worker's
        first case: only the graphs it runs load; later cases load more on first use."""
        plan = self.plan(is_3d, boxes, modality)
        if self.every_case is not None:
            return plan.encoder, None, self.why
        return plan.encoder, FLOAT_ENCODER if plan.guard else None, f"{plan.encoder} for the first case ({plan.reason})"

    def kind(self, encoder: str) -> str:
        """'float' or 'int8': efficiency.csv's precision column for a case ``encoder`` ran."""
        return "float" if encoder == FLOAT_ENCODER or self.setting == "fp32" else "int8"
