"""``--jobs N``: N worker processes over one inputs folder, each with its own model for its whole life,
pinned to its own cores (``cores / N`` OpenVINO threads each, so workers do not fight over cores).
A worker that dies (killed, out of memory) takes its pool down: the unfinished cases run again on a
fresh pool, within the loss limit (qmedsam.run.sharing)."""
from __future__ import annotations

import multiprocessing
import multiprocessing.util
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty

from qmedsam.run.config import RunConfig
from qmedsam.run.sharing import LOSS_LIMIT, in_order, memory_share, usable_cores, worker_count
from qmedsam.run.worker import CaseResult, CaseWorker
from qmedsam.system.memory import memory_limit


def core_sets(workers: int, threads: int, cores: list[int]) -> list[list[int]]:
    """Each worker's cores: ``threads`` of them (default: an equal share), disjoint while they last."""
    per = threads or max(1, len(cores) // workers)
    return [[cores[(w * per + k) % len(cores)] for k in range(per)] for w in range(workers)]


_worker: CaseWorker | None = None
_started = None


def _start_worker(config: RunConfig, ids, cores: list[list[int]], memory: int, started) -> None:
    global _worker, _started
    worker = ids.get()
    mine = cores[worker - 1]
    os.sched_setaffinity(0, mine)
    _started = started
    _worker = CaseWorker(config.worker(len(mine), memory), worker=worker)
    # a worker process ends through multiprocessing, which skips atexit: let a model load still
    # writing the compile cache finish first
    multiprocessing.util.Finalize(None, _worker.settle, exitpriority=10)


def _run_case(path: Path) -> CaseResult:
    _started.put(path.name)         # the parent's list of cases a dead worker may have held
    return _worker.run(path)


# a pool that keeps breaking with no case started (its workers die while loading) is given up
MAX_IDLE_BREAKS = LOSS_LIMIT


@dataclass
class Losses:
    """What lost workers cost so far: per case, the broken pools it was in flight in."""
    deaths: dict[str, int] = field(default_factory=dict)
    idle_breaks: int = 0

    def after_break(self, lost: list[Path], started: set[str]) -> tuple[list[Path], list[Path]]:
        """(cases to run again, cases to report failed) of the cases a broken pool left unfinished,
        ``started`` being those a worker had begun."""
        suspects = [p for p in lost if p.name in started]
        self.idle_breaks += not suspects
        for p in suspects:
            self.deaths[p.name] = self.deaths.get(p.name, 0) + 1
        give_up = self.idle_breaks > MAX_IDLE_BREAKS
        failed = [p for p in lost if give_up or self.deaths.get(p.name, 0) >= LOSS_LIMIT]
        return [p for p in lost if p not in failed], failed


def _drain(queue, wait: float = 0.0) -> set[str]:
    """The names in ``queue``, waiting up to ``wait`` seconds for each.  Read as the cases finish:
    a worker cannot exit while what it put in the queue is still unread and fills the pipe (about
    a thousand names), so a run of thousands of cases would hang at its end."""
    names = set()
    while True:
        try:
            names.add(queue.get(timeout=wait) if wait else queue.get_nowait())
        except Empty:
            return names


def _run_pool(ctx, config: RunConfig, cases: list[Path], workers: int, memory: int, on_result):
    """One pool over ``cases`` until they are done or a worker dies: (cases left unfinished by a
    dead worker, the names of the cases its workers began, the fatal start-up error or '')."""
    ids, started, began = ctx.Queue(), ctx.Queue(), set()
    for w in range(1, workers + 1):
        ids.put(w)
    cores = core_sets(workers, config.threads, sorted(os.sched_getaffinity(0)))
    fatal, lost = "", []
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_start_worker,
                             initargs=(config, ids, cores, memory, started)) as pool:
        pending = {pool.submit(_run_case, path): path for path in cases}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            began |= _drain(started)
            for future in done:
                path = pending.pop(future)
                if future.cancelled():
                    continue
                try:
                    result = future.result()
                except BrokenProcessPool:
                    lost.append(path)
                    continue
                except Exception as e:  # a worker that failed outside a case (its start)
                    result = CaseResult(path.name, failed=True, lines=[f"{path.name}: {type(e).__name__}: {e}"])
                if result.fatal and not fatal:
                    fatal = result.fatal
                    for other in pending:
                        other.cancel()
                on_result(result)
    # a dead worker's last name may still be on its way
    return lost, began | _drain(started, wait=0.1 if lost else 0.0), fatal


def run_jobs(config: RunConfig, cases: list[Path], tally) -> str:
    """Run ``cases`` on ``--jobs`` processes; ``tally`` gets each :class:`CaseResult` as it comes
    and says a line for the user (``tally.say``).  Returns the fatal start-up error ('' if none):
    then the cases not yet handed out are dropped."""
    cores = usable_cores()
    workers = worker_count(config.jobs, config.threads, cores, memory_limit())
    if config.verbose:
        tally.say(f"{workers} worker process{'' if workers == 1 else 'es'} over {cores} cores")
    ctx = multiprocessing.get_context("spawn")
    memory = memory_share(memory_limit(), 1, workers)
    losses, todo = Losses(), in_order(cases, workers)
    while todo:
        lost, began, fatal = _run_pool(ctx, config, todo, workers, memory, tally)
        if fatal or not lost:
            return fatal
        todo, failed = losses.after_break(lost, began)
        for path in failed:
            tally(CaseResult(path.name, failed=True,
                             lines=[f"{path.name}: a worker process died while running it, "
                                    f"{losses.deaths.get(path.name, 0)} times (killed, or out of memory)"]))
        if todo:
            tally.say(f"a worker process died (killed, or out of memory): {len(todo)} unfinished "
                      f"{'case' if len(todo) == 1 else 'cases'} go to fresh workers")
        todo = in_order(todo, workers)
    return ""
