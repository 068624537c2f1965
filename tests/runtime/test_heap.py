"""The predictor's one malloc arena (qmedsam.system.heap): checked through glibc's own arena report."""
import os
import platform
import re
import subprocess
import sys

import pytest

from conftest import ROOT

# Three threads allocate; glibc's malloc_stats() then prints one "Arena N:" block per arena.
PROBE = """
import ctypes, sys, threading
from qmedsam.system.heap import single_arena
if sys.argv[1] == "one":
    assert single_arena()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
held = []
def work():
    held.extend(libc.malloc(256) for _ in range(200))
threads = [threading.Thread(target=work) for _ in range(3)]
for t in threads:
    t.start()
for t in threads:
    t.join()
libc.malloc_stats()
"""


def arenas(mode: str) -> int:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    env.pop("MALLOC_ARENA_MAX", None)
    out = subprocess.run([sys.executable, "-c", PROBE, mode], env=env, capture_output=True, encoding="utf-8", errors="replace", check=True)
    return len(re.findall(r"^Arena \d+:", out.stderr, flags=re.M))


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the arena limit is glibc's")
def test_single_arena_keeps_every_thread_in_one_arena():
    assert arenas("many") > 1          # the probe does make glibc open arenas per thread
    assert arenas("one") == 1


def test_the_predictor_sets_it_before_its_threads_start():
    text = (ROOT / "src" / "qmedsam" / "predict.py").read_text()
    main = text[text.index('if __name__ == "__main__":'):]
    assert main.index("single_arena()") < main.index("main()")
