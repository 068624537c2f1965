"""``qmedsam-predict --ray ADDRESS``: the predictor's cases as tasks on Ray actors.

Each actor is a worker for its whole life: one :class:`qmedsam.case_runner.CaseRunner` (its models
compiled once), ``num_cpus`` equal to its OpenVINO threads.  Cases are handed out one at a time,
largest first, to whichever actor is free.  An actor lost mid-case (its process or its node killed)
is restarted by Ray, on another node if its own is gone, and its case re-run there (Ray's own
bounded retry); the case's claim (qmedsam.claims) makes sure it is never written twice or half.  A
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
from dataclasses import asdict
from pathlib import Path

import ray
from ray.exceptions import ActorDiedError, RayActorError

import qmedsam
from qmedsam.case_runner import CaseResult, CaseRunner
from qmedsam.engine import EngineError
from qmedsam.memory import memory_limit
from qmedsam.workers import largest_first

# Restarts of a lost actor, and times a case goes back to the queue when its actor is gone for good
# (bounded: a case that kills every worker it lands on, e.g. one too large for a node's memory, must
# not go round forever).
RESTARTS = 2
CONNECT_TIMEOUT_S = 5.0


class RayWorker:
    """The actor: a case runner with ``args.threads`` cores and its share of its node's memory."""

    def __init__(self, args, worker: int):
        cores = max(1, len(os.sched_getaffinity(0)))
        args.pin_threads = False          # Ray gives an actor a CPU count, not cores of its own
        self.runner = CaseRunner(args, worker=worker, memory=memory_limit() * args.threads // cores)

    def run(self, path: str) -> dict:
        return asdict(self.runner.run(Path(path)))


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


def run_on_ray(args, cases: list[Path], on_result) -> str:
    """Run ``cases`` on the cluster at ``args.ray``; ``on_result`` gets each :class:`CaseResult`.
    Returns the fatal start-up error ('' if none)."""
    connect(args.ray)
    try:
        args.threads = args.threads or 1
        cpus = ray.cluster_resources().get("CPU", 0)
        n = int(args.jobs) if isinstance(args.jobs, int) else max(1, int(cpus // args.threads))
        n = min(n, len(cases))
        for name in ("inputs", "outputs", "models", "models_dir", "cache_dir", "overlay"):    # the actors' working folder differs
            if getattr(args, name) is not None:
                setattr(args, name, getattr(args, name).resolve())
        # a task waits out its actor's restart however often Ray retries it (the node's death takes the
        # cluster some seconds to notice); the restarts themselves are bounded
        actor = ray.remote(num_cpus=args.threads, max_restarts=RESTARTS, max_task_retries=-1)(RayWorker)
        workers = [actor.options(scheduling_strategy="SPREAD").remote(args, w + 1) for w in range(n)]
        todo = deque(args.inputs / p.name for p in largest_first(cases))
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
                if lost[path.name] <= RESTARTS and workers:
                    todo.appendleft(path)
                    busy = [w for w, _ in running.values()]
                    for idle in [w for w in workers if not any(w is b for b in busy)]:
                        hand_out(idle)
                    continue
                result = CaseResult(path.name, failed=True,
                                    lines=[f"{path.name}: its Ray worker was lost {lost[path.name]} times "
                                           f"({type(e).__name__}); not retried again"])
            on_result(result)
            if result.fatal:
                return result.fatal
            if worker is not None:
                hand_out(worker)
        for path in todo:                     # every worker lost: nothing left to run the rest
            on_result(CaseResult(path.name, failed=True, lines=[f"{path.name}: no Ray worker left to run it"]))
        return ""
    finally:
        ray.shutdown()
