"""What the process that hands out the cases does with each result: print its lines, keep its row in
efficiency.csv, count it."""
from __future__ import annotations

import sys
from pathlib import Path

from qmedsam.run.claims import release
from qmedsam.run.config import RunConfig
from qmedsam.run.record import RunRecord
from qmedsam.run.worker import CaseResult, count


def say(text: str) -> None:
    print(f"qmedsam: {text}", file=sys.stderr, flush=True)


class Tally:
    def __init__(self, config: RunConfig, everything: list[Path]):
        self.config, self.record = config, RunRecord(config.outputs, everything)
        self.ok = self.failed = self.busy = 0
        self.say = say

    def __call__(self, result: CaseResult) -> None:
        for line in result.lines:
            say(line)
        if result.skipped == "busy":
            self.busy += 1
            if not self.config.quiet:
                say(f"{result.case}: being run by another process on {self.config.outputs}, skipped")
            return
        release(self.config.outputs, result.case)
        if result.fatal:
            return
        self.failed += result.failed
        self.ok += not result.failed
        # a case whose worker was lost has no row of its own: one that says it failed
        self.record.add(result.row or {"case": result.case, "status": "error", "models": self.config.models_id})

    def summary(self, n: int, seconds: float) -> str:
        busy = f", {self.busy} left to another run" if self.busy else ""
        return f"{count(n, 'case', 'cases')}: {self.ok} ok, {self.failed} failed{busy}, {seconds:.2f} s in all"
