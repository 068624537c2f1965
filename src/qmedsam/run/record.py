"""What a run leaves beside its outputs: ``efficiency.csv``, one row per case, and what ``--resume``
reads back from it.

Several processes may write one outputs folder (``--shard`` array tasks, two runs started on one
folder): each merges its rows into the file under a lock on the folder, so no run's rows are lost.
"""
from __future__ import annotations

import csv
import io
import time
from pathlib import Path

from qmedsam.cases.atomic import save_text
from qmedsam.run.claims import folder_lock
from qmedsam.segment.ledger import COLUMNS

NAME = "efficiency.csv"
FLUSH_EVERY_S = 2.0        # a run of thousands of short cases rewrites the file at most this often


def read_rows(outputs: Path) -> dict[str, dict]:
    try:
        with open(outputs / NAME, newline="") as f:
            return {r["case"]: r for r in csv.DictReader(f) if r.get("case")}
    except (OSError, csv.Error, KeyError):
        return {}


def resume_split(cases: list[Path], outputs: Path, models: str) -> tuple[list[Path], list[dict]]:
    """(cases still to run, efficiency.csv rows of those already done): a case is done when its
    output is in ``outputs`` (outputs are written by rename: a present file is whole) and its row
    says it ran ok with the same models."""
    rows = read_rows(outputs)
    todo, done = [], []
    for path in cases:
        row = rows.get(path.name)
        if row and row.get("status") == "ok" and row.get("models") == models and (outputs / path.name).is_file():
            done.append(row)
        else:
            todo.append(path)
    return todo, done


def csv_text(rows: list[dict]) -> str:
    """``efficiency.csv``: one row per case, the cost ledger's columns after the long-standing ones."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, restval="", lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


class RunRecord:
    """A run's rows, merged on every write with what the file holds for the inputs folder's other
    cases (written by another process, or by an earlier run); rows of cases no longer among the
    inputs are dropped.  Rows are kept in case-name order."""

    def __init__(self, outputs: Path, inputs: list[Path]):
        self.outputs, self.names = outputs, {p.name for p in inputs}
        self.rows: dict[str, dict] = {}
        self._written = 0.0
        self._dirty = False

    def add(self, row: dict) -> None:
        self.rows[row["case"]] = row
        self._dirty = True
        if time.monotonic() - self._written >= FLUSH_EVERY_S:
            self.write()

    def write(self) -> None:
        if not self._dirty:
            return
        with folder_lock(self.outputs):
            merged = {k: v for k, v in read_rows(self.outputs).items() if k in self.names}
            merged.update(self.rows)
            save_text(self.outputs / NAME, csv_text([merged[k] for k in sorted(merged)]))
        self._written, self._dirty = time.monotonic(), False
