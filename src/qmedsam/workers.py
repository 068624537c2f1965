"""``--jobs N``: N worker processes over one inputs folder, each with its own compiled models for its
whole life, pinned to its own cores (``cores / N`` OpenVINO threads each, so workers do not fight
over cores), cases handed out one at a time, largest first, so that no worker is left alone with a
big case at the end.  The parent prints the results and keeps ``efficiency.csv``.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.util
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from qmedsam.case_runner import CaseResult, CaseRunner
from qmedsam.memory import memory_limit

# A worker's resident memory with its models loaded and a large case decoded (peak_rss_mb of the
# 125-box and 3024x4032 public cases, about 0.7 GB, with margin): --jobs auto runs no more workers
# than the memory limit holds.
WORKER_BYTES = 1 << 30


def usable_cores(root: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (docker --cpus)."""
    n = len(os.sched_getaffinity(0))
    try:
        quota, period = (root / "cpu.max").read_text().split()
        if quota != "max":
            n = min(n, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return n


def worker_count(jobs: int | str, threads: int, cores: int, memory: int) -> int:
    """How many workers ``--jobs`` asks for: 'auto' is one per ``threads`` cores (1 when not given),
    no more than the memory holds."""
    if jobs != "auto":
        return int(jobs)
    return max(1, min(cores // max(1, threads), memory // WORKER_BYTES))


def core_sets(workers: int, threads: int, cores: list[int]) -> list[list[int]]:
    """Each worker's cores: ``threads`` of them (default: an equal share), disjoint while they last."""
    per = threads or max(1, len(cores) // workers)
    return [[cores[(w * per + k) % len(cores)] for k in range(per)] for w in range(workers)]


_runner: CaseRunner | None = None


def _start_worker(args, ids, cores: list[list[int]], memory: int) -> None:
    global _runner
    worker = ids.get()
    mine = cores[worker - 1]
    os.sched_setaffinity(0, mine)
    args.threads = len(mine)
    _runner = CaseRunner(args, worker=worker, memory=memory)
    # a worker process ends through multiprocessing, which skips atexit: let a model load still
    # writing the compile cache finish first
    multiprocessing.util.Finalize(None, _runner.settle, exitpriority=10)


def _run_case(path: Path) -> CaseResult:
    return _runner.run(path)


def largest_first(cases: list[Path]) -> list[Path]:
    """Cases by file size, largest first (the compressed size follows the voxels a case decodes)."""
    return sorted(cases, key=lambda p: (-p.stat().st_size, p.name))


def run_jobs(args, cases: list[Path], workers: int, on_result) -> str:
    """Run ``cases`` on ``workers`` processes; ``on_result`` gets each :class:`CaseResult` as it
    comes.  Returns the fatal start-up error ('' if none): then the cases not yet handed out are
    dropped."""
    ctx = multiprocessing.get_context("spawn")
    ids = ctx.Queue()
    for w in range(1, workers + 1):
        ids.put(w)
    cores = core_sets(workers, args.threads, sorted(os.sched_getaffinity(0)))
    memory = memory_limit() // workers
    fatal = ""
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_start_worker,
                             initargs=(args, ids, cores, memory)) as pool:
        pending = {pool.submit(_run_case, path): path for path in largest_first(cases)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                path = pending.pop(future)
                if future.cancelled():
                    continue
                try:
                    result = future.result()
                except BrokenProcessPool:
                    result = CaseResult(path.name, failed=True,
                                        lines=[f"{path.name}: a worker process died (killed, or out of memory); "
                                               f"run again with --resume"])
                except Exception as e:  # a worker that failed outside a case (its start)
                    result = CaseResult(path.name, failed=True, lines=[f"{path.name}: {type(e).__name__}: {e}"])
                if result.fatal and not fatal:
                    fatal = result.fatal
                    for other in pending:
                        other.cancel()
                on_result(result)
    return fatal
