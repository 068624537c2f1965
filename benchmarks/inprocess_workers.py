"""The alternative to ``--jobs`` processes that issue 40 asks to measure: N workers as threads of one
process (each its own compiled models of cores/N threads, as OpenVINO's throughput mode runs one
stream per few cores), the same case runner, queue and efficiency.csv.  ``bench-throughput`` runs
it beside ``--jobs``; the predictor ships processes (see docs/datasets.md for the figures).

    python -m benchmarks.inprocess_workers N -i INPUTS -o OUTPUTS [predictor options]
"""
from __future__ import annotations

import sys
import threading
import time

from qmedsam.predict import parse_args
from qmedsam.run.claims import remove_folder
from qmedsam.run.sharing import in_order, memory_share, usable_cores
from qmedsam.run.start import configure
from qmedsam.run.tally import Tally
from qmedsam.run.worker import CaseWorker
from qmedsam.system.memory import memory_limit


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    n, args = int(argv[0]), parse_args(argv[1:])
    t0 = time.perf_counter()
    config, cases, everything, _ = configure(args)
    tally, lock = Tally(config, everything), threading.Lock()
    todo = in_order(cases, n)

    def work(worker: int) -> None:
        # threads of one process: no core sets of their own
        mine = config.worker(max(1, usable_cores() // n), memory_share(memory_limit(), 1, n), pin_threads=False)
        runner = CaseWorker(mine, worker=worker)
        while True:
            with lock:
                if not todo:
                    break
                path = todo.pop(0)
            result = runner.run(path)
            with lock:
                tally(result)
        runner.settle()

    threads = [threading.Thread(target=work, args=(w + 1,)) for w in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tally.record.write()
    remove_folder(config.outputs)
    print(f"qmedsam: {tally.summary(len(cases), time.perf_counter() - t0)}", file=sys.stderr)
    return 1 if tally.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
