"""Where a run's cases go: this process, ``--jobs`` worker processes, or Ray actors (the cluster
extra), three pools behind one call: ``pool(config, cases, tally) -> fatal error or ''`` (the tally
takes each case's result and says the pool's own lines: qmedsam.run.tally)."""
from __future__ import annotations

import sys
from pathlib import Path

from qmedsam.model.folder import EngineError
from qmedsam.run.config import RunConfig
from qmedsam.run.sharing import in_order
from qmedsam.run.worker import CaseWorker


def run_here(config: RunConfig, cases: list[Path], tally) -> str:
    """The cases one after another in this process (the organisers' way)."""
    worker = CaseWorker(config, progress=not config.quiet and sys.stderr.isatty())
    try:
        for path in in_order(cases, 1):
            result = worker.run(path)
            tally(result)
            if result.fatal:
                return result.fatal
    finally:
        worker.settle()
    return ""


def extra_pool(name: str):
    """A pool an installed extra registers (entry point group ``qmedsam.pools``; the cluster
    extra registers ``ray``): the runtime never names packages it does not ship."""
    from importlib.metadata import entry_points

    found = entry_points(group="qmedsam.pools", name=name)
    if not found:
        raise EngineError(f"--{name} needs the cluster extra (pip install 'qmedsam[cluster]')")
    try:
        return next(iter(found)).load()
    except ImportError as e:
        raise EngineError(f"--{name} needs the cluster extra (pip install 'qmedsam[cluster]'): {e}") from None


def pool_for(config: RunConfig):
    """The pool ``config`` asks for."""
    if config.ray:
        return extra_pool("ray")
    if config.jobs is not None:
        from qmedsam.run.processes import run_jobs

        return run_jobs
    return run_here
