"""--resume (skip cases already done with the same models) and --shard I/N (a deterministic part of
the sorted case list): a stopped or split run ends with the outputs of one whole run."""
import csv
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, SAMPLES
from qmedsam.predict import main, parse_args

TWO_D = ("2DBox_CT_0002.npz", "2DBox_Microscope_0003.npz")


@pytest.fixture()
def inputs(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in TWO_D:
        shutil.copy(SAMPLES / "inputs" / name, folder)
    return folder


def _rows(out):
    with open(out / "efficiency.csv", newline="") as f:
        return {r["case"]: r for r in csv.DictReader(f)}


def _segs(out, name):
    return np.load(out / name)["segs"]


def test_resume_runs_only_what_is_missing_and_keeps_the_done_rows(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["-i", str(inputs), "-o", str(out), "-q"]) == 0
    first = {n: _segs(out, n) for n in TWO_D}
    done_row = _rows(out)[TWO_D[0]]
    assert len(done_row["models"]) == 12
    (out / TWO_D[1]).unlink()                                  # a run stopped before its second case
    capsys.readouterr()
    assert main(["-i", str(inputs), "-o", str(out), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "resume: 1 case already done with these models, skipped" in err and f"{TWO_D[0]}: ok" not in err
    rows = _rows(out)
    assert set(rows) == set(TWO_D) and rows[TWO_D[0]] == done_row
    for n in TWO_D:
        assert np.array_equal(_segs(out, n), first[n])
    # everything done: nothing runs
    assert main(["-i", str(inputs), "-o", str(out), "--resume", "-q"]) == 0
    assert "2 cases already done" in capsys.readouterr().err


def test_a_case_from_other_models_is_run_again(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["-i", str(inputs), "-o", str(out), "-q"]) == 0
    rows = _rows(out)
    rows[TWO_D[0]]["models"] = "0123456789ab"               # written by an older models folder
    with open(out / "efficiency.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[TWO_D[0]]))
        writer.writeheader()
        writer.writerows(rows.values())
    capsys.readouterr()
    assert main(["-i", str(inputs), "-o", str(out), "--resume"]) == 0
    err = capsys.readouterr().err
    assert f"{TWO_D[0]}: ok" in err and f"{TWO_D[1]}: ok" not in err


def test_shards_split_the_sorted_cases_without_overlap(tmp_path):
    folder = tmp_path / "in"              # five small 2D cases: which case goes where is under test
    folder.mkdir()
    image = np.zeros((64, 64), np.uint8)
    image[20:40, 20:40] = 200
    for k in range(5):
        np.savez(folder / f"2DBox_Synth_{k:04d}.npz", imgs=image, boxes=np.array([[18, 18, 42, 42]]))
    shards = [tmp_path / f"shard{i}" for i in (1, 2)]
    for i, out in enumerate(shards, 1):
        assert main(["-i", str(folder), "-o", str(out), "-q", "--shard", f"{i}/2", "--cache", "none"]) == 0
    names = sorted(p.name for p in folder.glob("*.npz"))
    got = [sorted(p.name for p in out.glob("*.npz")) for out in shards]
    assert got == [names[0::2], names[1::2]]
    for bad in ("0/2", "3/2", "1-2", "x"):
        with pytest.raises(SystemExit) as e:
            parse_args(["--shard", bad])
        assert e.value.code == 2


@pytest.mark.wide
def test_a_killed_run_leaves_only_whole_outputs_and_resume_finishes_it(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in sorted(p.name for p in (SAMPLES / "inputs").glob("*.npz")):
        shutil.copy(SAMPLES / "inputs" / name, inputs)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "qmedsam.predict", "-i", str(inputs), "-o", str(out), "-q"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not any(out.glob("2D*.npz")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)                        # mid-run, most likely inside the 3D CT case
    proc.wait()
    for path in out.glob("*.npz"):                          # every visible output is whole
        np.load(path)["segs"]
    assert subprocess.run(cmd + ["--resume"], cwd=ROOT).returncode == 0
    reference = tmp_path / "whole"
    assert main(["-i", str(inputs), "-o", str(reference), "-q"]) == 0
    for path in sorted(inputs.glob("*.npz")):
        assert np.array_equal(_segs(out, path.name), _segs(reference, path.name)), path.name
