"""The compile cache's first compile of an entry is one process's at a time; a complete entry loads
without the lock."""
import subprocess
import sys
import time
from pathlib import Path

from qmedsam.model.cache import FOLDER, entry_key, first_compile

HOLDER = ("import sys, time; from pathlib import Path; from qmedsam.model.cache import first_compile\n"
          "with first_compile(Path(sys.argv[1]), 'k') as mark:\n"
          "    print('held', flush=True); sys.stdin.readline()\n"
          "    if sys.argv[2] == 'mark': mark()\n"
          "    Path(sys.argv[1], 'released').touch()\n")


def _holder(cache: Path, then: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(cache), then], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_process_waits_for_the_first_compile_of_an_entry(tmp_path):
    holder = _holder(tmp_path, "mark")
    # let the holder go only a moment after this process started waiting on the lock
    subprocess.Popen([sys.executable, "-c", "import sys, time; time.sleep(0.5); sys.stdout.write('\\n')"],
                     stdout=holder.stdin)
    with first_compile(tmp_path, "k") as mark:
        assert (tmp_path / "released").exists()         # entered only after the holder was done
        mark()
    holder.wait(timeout=30)
    assert (tmp_path / FOLDER / "k.ready").exists()


def test_a_complete_entry_loads_without_waiting_for_a_lock_holder(tmp_path):
    with first_compile(tmp_path, "k") as mark:
        mark()
    holder = _holder(tmp_path, "")                      # holds the lock file of that entry
    t = time.perf_counter()
    with first_compile(tmp_path, "k"):
        assert not (tmp_path / "released").exists()
    assert time.perf_counter() - t < 5
    holder.communicate("\n", timeout=30)


def test_a_compile_that_failed_leaves_the_entry_unmarked(tmp_path):
    holder = _holder(tmp_path, "no mark")
    holder.communicate("\n", timeout=30)
    assert not (tmp_path / FOLDER / "k.ready").exists()
    with first_compile(None, "k") as mark:                    # no cache: nothing to guard
        mark()
    assert not (tmp_path / FOLDER / "k.ready").exists()


def test_the_entry_key_follows_the_graph_files_and_the_settings(tmp_path):
    xml, bin_ = tmp_path / "g.xml", tmp_path / "g.bin"
    xml.write_text("<net/>")
    bin_.write_bytes(b"1234")
    key = entry_key(xml, {"A": 1}, "2026.4")
    assert key == entry_key(xml, {"A": 1}, "2026.4")
    assert key != entry_key(xml, {"A": 2}, "2026.4")
    assert key != entry_key(xml, {"A": 1}, "2026.5")
    bin_.write_bytes(b"123456")                           # a new export of the graph
    assert key != entry_key(xml, {"A": 1}, "2026.4")
