"""--ray on a real local Ray cluster (a head and two worker nodes on this machine, over loopback):
the plain run's label maps, a bad case reported once, and a worker node killed mid-run losing no
case and writing none twice or half.  An unreachable cluster is one line and exit status 2."""
import csv
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, write_short_cases
from qmedsam.predict import main

ray = pytest.importorskip("ray")


def _cmd(inputs, out, *more):
    return [sys.executable, "-m", "qmedsam.predict", "-i", str(inputs), "-o", str(out), *more]


def test_an_unreachable_cluster_is_one_line_and_exit_status_2(tmp_path):
    inputs = tmp_path / "in"
    write_short_cases(inputs)
    out = tmp_path / "out"
    result = subprocess.run(_cmd(inputs, out, "--ray", "127.0.0.1:1"), cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "qmedsam: --ray 127.0.0.1:1: cannot reach the Ray cluster's head (Connection refused)"]
    assert not list(out.glob("*.npz"))


@pytest.mark.slow
def test_a_worker_node_killed_mid_run_loses_no_case(tmp_path):
    from ray.cluster_utils import Cluster

    inputs = tmp_path / "in"
    names = write_short_cases(inputs)
    for name in names[2:4]:                          # more cases than two workers take at once
        (inputs / name.replace("_1", "_2")).write_bytes((inputs / name).read_bytes())
    (inputs / "2DBox_Bad_0009.npz").write_bytes(b"not a zip")
    names = sorted(p.name for p in inputs.glob("*.npz") if "Bad" not in p.name)
    reference = tmp_path / "plain"
    assert main(["-i", str(inputs), "-o", str(reference), "-q"]) == 1

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        nodes = [cluster.add_node(num_cpus=2) for _ in range(2)]   # room for a lost node's actor
        cluster.wait_for_nodes()
        out = tmp_path / "out"
        proc = subprocess.Popen(_cmd(inputs, out, "--ray", cluster.address, "--jobs", "2", "--threads", "1"),
                                cwd=ROOT, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 300
        while len(list(out.glob("*.npz"))) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1]
        written_before = len(list(out.glob("*.npz")))
        cluster.remove_node(nodes[0], allow_graceful=False)     # its actor's case is in flight
        err = proc.communicate(timeout=600)[1]
    finally:
        cluster.shutdown()
    assert written_before < len(names), "the run ended before the node was killed"
    assert proc.returncode == 1, err                  # the bad case, and only it, failed
    lines = err.strip().splitlines()
    assert sum("2DBox_Bad_0009.npz" in line for line in lines) == 1, err
    assert f"{len(names) + 1} cases: {len(names)} ok, 1 failed" in lines[-1], err
    assert sorted(p.name for p in out.glob("*.npz")) == names
    assert not list(out.glob(".*.part")) and not (out / ".qmedsam-claims").exists()
    for name in names:
        assert np.array_equal(np.load(out / name)["segs"], np.load(reference / name)["segs"]), name
    with open(out / "efficiency.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["case"] for r in rows) == sorted(names + ["2DBox_Bad_0009.npz"])   # one row a case
    assert {r["worker"] for r in rows} == {"1", "2"}
