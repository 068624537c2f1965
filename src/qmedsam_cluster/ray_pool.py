"""``qmedsam-predict --ray ADDRESS``: the predictor's cases as tasks on Ray actors.

Each actor is a worker for its whole life: one :class:`qmedsam.run.worker.CaseWorker` (its model
compiled once), ``num_cpus`` equal to its OpenVINO threads.  Cases are handed out one at a time,
largest first, to whichever actor is free.  An actor lost mid-case (its process or its node killed)
is restarted by Ray, on another node if its own is gone, and its case re-run there (Ray's own
bounded retry); the case's claim (qmedsam.run.claims) makes sure it is never written twice or half.  A
case that fails on its own (bad input) comes back as a result like any other and is not retried.
Inputs and outputs must be paths that every node sees (a shared filesystem).
"""
from __future__ import annotations

import logging
import os
import socket
import tempfile
from collections import deque
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

import ray
from ray.exceptions import ActorDiedError, RayActorError

import qmedsam
from qmedsam.model.folder import EngineError
from qmedsam.run.sharing import LOSS_LIMIT, in_order, memory_share, worker_count
from qmedsam.run.worker import CaseResult, CaseWorker
from qmedsam.system.memory import memory_limit

CONNECT_TIMEOUT_S = 5.0


class RayWorker:
    """The actor: a case worker with ``config.threads`` cores and its share of its node's memory."""

    def __init__(self, config, worker: int):
        cores = max(1, len(os.sched_getaffinity(0)))
        # Ray gives an actor a CPU count, not cores of its own: its threads are not pinned
        share = memory_share(memory_limit(), config.threads, cores)
        self.worker = CaseWorker(config.worker(config.threads, share, pin_threads=False), worker=worker)

    def run(self, path: str) -> dict:
        return asdict(self.worker.run(Path(path)))


def check_reachable(address: str) -> None:
    """Raise :class:`EngineError` unless the head at ``host:port`` (or ``ray://host:port``) accepts
    a connection: without this check ``ray.init`` retries for a minute before it gives up."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
        raise EngineError(f"--ray {address}: cannot reach the Ray cluster's head ({reason})") from None


@contextmanager
def _stderr_aside():
    """Send file descriptor 2 (where Ray's C++ side logs) to a scratch file for the ``with`` block."""
    saved = os.dup(2)
    with tempfile.TemporaryFile() as scratch:
        os.dup2(scratch.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def connect(address: str) -> None:
    if address != "auto":
        check_reachable(address)
    # the actors import qmedsam from where this process does (a path every node sees)
    source = str(Path(qmedsam.__file__).resolve().parent.parent)
    env = {"PYTHONPATH": os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH", "")) if p)}
    # one line per case and one summary, as without Ray: Ray's own notices and its C++ client's
    # connection retries (a line a second) stay out of the predictor's output
    logging.getLogger("ray").setLevel(logging.ERROR)
    try:
        with _stderr_aside():
            ray.init(address=None if address == "auto" else address, runtime_env={"env_vars": env},
                     log_to_driver=False, logging_level="ERROR", configure_logging=False)
    except Exception as e:                        # Ray raises several kinds here (auth, connection)
        cause = e.__cause__ or e                  # Ray's own reason, e.g. a missing auth token
        reason = next((line for line in str(cause).splitlines() if line.strip()), type(cause).__name__)
        if "InvalidAuthToken" in str(cause):
            # `ray start` turns token authentication on; a driver sends the token only in token mode,
            # which Ray reads when imported (a driver in token mode cannot run actors on a cluster
            # without tokens, so the mode is the user's to set, not ours to guess)
            reason = ("it uses token authentication: export RAY_AUTH_MODE=token, with the cluster's token "
                      "in ~/.ray/auth_token or RAY_AUTH_TOKEN")
        raise EngineError(f"--ray {address}: cannot connect to the Ray cluster ({reason[:300]})") from None


def run_on_ray(config, cases: list[Path], tally) -> str:
    """Run ``cases`` on the cluster at ``config.ray``; ``tally`` gets each :class:`CaseResult`.
    Returns the fatal start-up error ('' if none)."""
    connect(config.ray)
    try:
        # the actors' working folder differs: absolute paths; one core an actor unless told
        config = replace(config.resolved(), threads=config.threads or 1)
        resources = ray.cluster_resources()
        n = worker_count(config.jobs if config.jobs is not None else "auto", config.threads,
                         int(resources.get("CPU", 0)), int(resources.get("memory", 0)) or memory_limit())
        n = min(n, len(cases))
        # a task waits out its actor's restart however often Ray retries it (the node's death takes the
        # cluster some seconds to notice); the restarts themselves are bounded
        actor = ray.remote(num_cpus=config.threads, max_restarts=LOSS_LIMIT, max_task_retries=-1)(RayWorker)
        workers = [actor.options(scheduling_strategy="SPREAD").remote(config, w + 1) for w in range(n)]
        todo = deque(config.inputs / p.name for p in in_order(cases, n))
        running: dict = {}                   # the task's object ref -> (actor, case path)
        lost: dict[str, int] = {}            # case -> times its worker was lost under it

        def hand_out(worker) -> None:
            if todo:
                path = todo.popleft()
                running[worker.run.remote(str(path))] = (worker, path)

        for worker in workers:
            hand_out(worker)
        while running:
            [ref], _ = ray.wait(list(running), num_returns=1)
            worker, path = running.pop(ref)
            try:
                result = CaseResult(**ray.get(ref))
            except RayActorError as e:
                # Ray's own retries are spent (the actor was unreachable while its node went
                # away, or it is dead for good): the case goes back to the queue, a bounded number
                # of times, for this actor once restarted or for another one
                if isinstance(e, ActorDiedError):
                    workers.remove(worker)
                    worker = None
                lost[path.name] = lost.get(path.name, 0) + 1
                if lost[path.name] <= LOSS_LIMIT and workers:
                    todo.appendleft(path)
                    busy = [w for w, _ in running.values()]
                    for idle in [w for w in workers if not any(w is b for b in busy)]:
                        hand_out(idle)
                    continue
                result = CaseResult(path.name, failed=True,
                                    lines=[f"{path.name}: its Ray worker was lost {lost[path.name]} times "
                                           f"({type(e).__name__}); not retried again"])
            tally(result)
            if result.fatal:
                return result.fatal
            if worker is not None:
                hand_out(worker)
        for path in todo:                     # every worker lost: nothing left to run the rest
            tally(CaseResult(path.name, failed=True, lines=[f"{path.name}: no Ray worker left to run it"]))
        return ""
    finally:
        ray.shutdown()
