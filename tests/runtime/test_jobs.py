"""--jobs N: worker processes over one inputs folder give the label maps of the plain run, share one
efficiency.csv, and leave only whole outputs when two runs share a folder or a run is killed."""
import csv
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, write_short_cases
from qmedsam.predict import main, parse_args
from qmedsam.run.processes import core_sets
from qmedsam.run.sharing import in_order, memory_share, usable_cores, worker_count


@pytest.fixture(scope="module")
def short_cases(tmp_path_factory):
    folder = tmp_path_factory.mktemp("short") / "in"
    return folder, write_short_cases(folder)


@pytest.fixture(scope="module")
def plain(short_cases, tmp_path_factory):
    """The plain run's outputs: one process, the cases in order."""
    inputs, _ = short_cases
    out = tmp_path_factory.mktemp("plain") / "out"
    assert main(["-i", str(inputs), "-o", str(out), "-q"]) == 0
    return out


def _rows(out):
    with open(out / "efficiency.csv", newline="") as f:
        return list(csv.DictReader(f))


def _same_maps(out, reference, names):
    for name in names:
        assert np.array_equal(np.load(out / name)["segs"], np.load(reference / name)["segs"]), name


def _only_whole_outputs(out, names):
    assert sorted(p.name for p in out.glob("*.npz")) == names
    assert not list(out.glob(".*.part")), "a temporary file was left behind"
    assert not (out / ".qmedsam-claims").exists()


def test_two_workers_give_the_plain_runs_label_maps_and_one_csv(short_cases, plain, tmp_path, capsys):
    inputs, names = short_cases
    out = tmp_path / "out"
    assert main(["-i", str(inputs), "-o", str(out), "--jobs", "2"]) == 0
    err = capsys.readouterr().err
    assert err.count(": ok, ") == len(names) and f"{len(names)} cases: {len(names)} ok, 0 failed" in err
    _same_maps(out, plain, names)
    rows = _rows(out)
    assert [r["case"] for r in rows] == names                    # one row a case, in name order
    assert {r["worker"] for r in rows} == {"1", "2"}             # both workers took cases
    assert {r["worker"] for r in _rows(plain)} == {"0"}
    _only_whole_outputs(out, names)


def test_a_bad_case_is_one_line_and_the_others_still_run(short_cases, tmp_path, capsys):
    inputs, names = short_cases
    folder = tmp_path / "in"
    folder.mkdir()
    for name in names[:3]:
        (folder / name).write_bytes((inputs / name).read_bytes())
    (folder / "2DBox_Bad_0001.npz").write_bytes(b"not a zip")
    out = tmp_path / "out"
    assert main(["-i", str(folder), "-o", str(out), "--jobs", "2", "-q"]) == 1
    err = capsys.readouterr().err.splitlines()
    bad = [line for line in err if "2DBox_Bad_0001.npz" in line]
    assert len(bad) == 1 and "4 cases: 3 ok, 1 failed" in err[-1]
    assert sorted(p.name for p in out.glob("*.npz")) == names[:3]


def _cmd(inputs, out, *more):
    return [sys.executable, "-m", "qmedsam.predict", "-i", str(inputs), "-o", str(out), "-q", *more]


def test_thousands_of_cases_end(tmp_path):
    """Workers name each case they begin to the parent; names left unread fill the pipe, and a
    worker that cannot flush them never exits (1,500 long names did that: the run hung at its end)."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(1500):
        (folder / f"2DBox_Bad_{'x' * 60}_{i:05d}.npz").write_bytes(b"not a zip")
    run = subprocess.run(_cmd(folder, tmp_path / "out", "--jobs", "2"), cwd=ROOT, stderr=subprocess.PIPE,
                         text=True, timeout=120)
    assert run.returncode == 1 and "1500 cases: 0 ok, 1500 failed" in run.stderr.splitlines()[-1]


@pytest.mark.wide
def test_two_runs_on_one_outputs_folder_share_the_work(short_cases, plain, tmp_path):
    inputs, names = short_cases
    out = tmp_path / "out"
    # four processes start on one empty compile cache (qmedsam.model.cache keeps them from reading
    # an entry another one is writing)
    runs = [subprocess.Popen(_cmd(inputs, out, "--jobs", "2"), cwd=ROOT, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    errs = [p.communicate(timeout=600)[1] for p in runs]
    assert [p.returncode for p in runs] == [0, 0], errs
    _only_whole_outputs(out, names)
    _same_maps(out, plain, names)
    assert sorted(r["case"] for r in _rows(out)) == names          # neither run's rows were lost
    # a case one run holds at the moment is left to it by the other (without --resume a case the
    # other has finished already is run again)
    ok, left = [], []
    for e in errs:
        m = re.search(r"(\d+) cases: (\d+) ok, 0 failed(?:, (\d+) left to another run)?", e)
        ok.append(int(m[2]))
        left.append(int(m[3] or 0))
        assert int(m[1]) == len(names) == ok[-1] + left[-1], errs
    assert sum(left) >= 1, errs


@pytest.mark.wide
def test_a_killed_jobs_run_leaves_only_whole_outputs_and_resume_finishes_it(short_cases, plain, tmp_path):
    inputs, names = short_cases
    out = tmp_path / "out"
    proc = subprocess.Popen(_cmd(inputs, out, "--jobs", "2"), cwd=ROOT, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while not any(out.glob("*.npz")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)              # the run and its workers, mid-run
    proc.wait()
    time.sleep(0.5)
    done = sorted(p.name for p in out.glob("*.npz"))
    assert len(done) < len(names), "the run ended before it was killed"
    for name in done:                                # every visible output is whole
        np.load(out / name)["segs"]
    result = subprocess.run(_cmd(inputs, out, "--jobs", "2", "--resume"), cwd=ROOT, stderr=subprocess.PIPE, text=True)
    assert result.returncode == 0, result.stderr
    _only_whole_outputs(out, names)
    _same_maps(out, plain, names)


def _workers_of(pid: int) -> list[int]:
    """The --jobs worker processes of a run (children started by multiprocessing's spawn)."""
    found = []
    for d in os.listdir("/proc"):
        try:
            stat = open(f"/proc/{d}/stat").read()
            cmd = open(f"/proc/{d}/cmdline", "rb").read()
        except (OSError, ValueError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in cmd:
            found.append(int(d))
    return found


@pytest.mark.wide
def test_a_worker_killed_mid_run_is_replaced_and_no_case_is_lost(short_cases, plain, tmp_path):
    inputs, names = short_cases
    out = tmp_path / "out"
    proc = subprocess.Popen(_cmd(inputs, out, "--jobs", "2", "--cache", str(plain / ".qmedsam-cache")), cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not any(out.glob("*.npz")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    workers = _workers_of(proc.pid)
    assert len(workers) == 2 and len(list(out.glob("*.npz"))) < len(names)
    os.kill(workers[0], signal.SIGKILL)              # as the kernel's OOM killer would
    err = proc.communicate(timeout=600)[1]
    assert proc.returncode == 0, err
    assert "go to fresh workers" in err and f"{len(names)} cases: {len(names)} ok, 0 failed" in err, err
    _only_whole_outputs(out, names)
    _same_maps(out, plain, names)
    assert sorted(r["case"] for r in _rows(out)) == names


def test_a_case_in_flight_when_two_pools_broke_is_given_up():
    from pathlib import Path

    from qmedsam.run.processes import MAX_IDLE_BREAKS, Losses

    a, b, c = Path("a.npz"), Path("b.npz"), Path("c.npz")
    losses = Losses()
    assert losses.after_break([a, b, c], {"a.npz", "b.npz"}) == ([a, b, c], [])
    assert losses.after_break([a, c], {"a.npz"}) == ([c], [a])       # a: in flight twice
    assert losses.after_break([c], {"c.npz"}) == ([c], [])            # c: once
    for _ in range(MAX_IDLE_BREAKS):                                   # workers that die while loading
        assert losses.after_break([c], set()) == ([c], [])
    assert losses.after_break([c], set()) == ([], [c])


def test_worker_count_and_cores():
    assert worker_count(3, 0, 2, 8 << 30) == 3                    # asked for: as asked
    assert worker_count("auto", 0, 16, 64 << 30) == 16            # one a core
    assert worker_count("auto", 4, 16, 64 << 30) == 4             # threads cores each
    assert worker_count("auto", 0, 16, 4 << 30) == 4              # no more than the memory holds
    assert worker_count("auto", 0, 1, 0) == 1
    assert core_sets(2, 0, [0, 1, 2, 3]) == [[0, 1], [2, 3]]
    assert core_sets(2, 1, [4, 5]) == [[4], [5]]
    assert core_sets(3, 0, [0, 1]) == [[0], [1], [0]]             # more workers than cores: shared
    assert 1 <= usable_cores() <= os.cpu_count()


def test_usable_cores_follow_a_cgroup_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")          # docker --cpus 1.5
    assert usable_cores(tmp_path) == 1 or len(os.sched_getaffinity(0)) < 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cores(tmp_path) == len(os.sched_getaffinity(0))


def test_jobs_option():
    assert parse_args(["--jobs", "auto"]).jobs == "auto" and parse_args(["--jobs", "3"]).jobs == 3
    assert parse_args([]).jobs is None
    for bad in ("0", "-1", "x"):
        with pytest.raises(SystemExit):
            parse_args(["--jobs", bad])


def test_workers_share_the_memory_limit_in_their_box_blocks():
    """--max-boxes auto in a worker sizes blocks from its share of the memory limit, so that N
    workers stay within a container's -m limit."""
    from qmedsam.segment.options import SegmentOptions
    from qmedsam.system.memory import DECODER_BYTES_PER_BOX, MAX_BLOCK, current_rss_bytes

    whole = SegmentOptions().block_size((600, 800), 64 << 30)
    share = current_rss_bytes() + 4 * 600 * 800 + 4 * 2 * DECODER_BYTES_PER_BOX + (16 << 20)
    assert whole == MAX_BLOCK and SegmentOptions().block_size((600, 800), share) == 2
    assert memory_share(8 << 30, 1, 4) == 2 << 30 and memory_share(8 << 30, 2, 8) == 2 << 30


def test_one_worker_keeps_the_organisers_order_and_many_take_the_largest_cases_first(tmp_path):
    small, large = tmp_path / "a.npz", tmp_path / "b.npz"
    small.write_bytes(b"x")
    large.write_bytes(b"x" * 100)
    assert in_order([small, large], 1) == [small, large] and in_order([small, large], 2) == [large, small]
