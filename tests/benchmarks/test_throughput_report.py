"""bench-throughput's report: ratios round by round, the cores a run kept busy, and label maps
compared with the plain run's."""
import numpy as np

from benchmarks import bench_throughput as bt


def _run(wall, cpu):
    return {"wall": wall, "cpu_s": cpu, "case_seconds": [1.0, 2.0, 3.0]}


def _maps(root, label, value):
    folder = root / "runs" / label
    folder.mkdir(parents=True)
    np.savez_compressed(folder / "a.npz", segs=np.full((4, 4), value, np.uint8))


def test_each_round_is_judged_against_the_plain_run_of_the_same_round(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bt, "OUT", tmp_path)
    _maps(tmp_path, "plain", 1)
    _maps(tmp_path, "jobs_2", 1)
    _maps(tmp_path, "jobs_1", 2)
    measured = {"plain": [_run(100.0, 190.0), _run(140.0, 266.0)],
                "--jobs 2": [_run(80.0, 160.0), _run(140.0, 280.0)],
                "--jobs 1": [_run(125.0, None), _run(70.0, None)]}
    runs = {"plain": [], "--jobs 2": ["--jobs", "2"], "--jobs 1": ["--jobs", "1"]}
    results = bt.summarize(measured, runs, n=24, cores=2, rounds=2)
    jobs2, jobs1, plain = (results["configs"][k] for k in ("--jobs 2", "--jobs 1", "plain"))
    assert jobs2["vs_plain_per_round"] == [1.25, 1.0]
    assert jobs2["vs_plain"] == round(120.0 / 110.0, 3)          # medians of the rounds
    assert jobs2["busy_cores"] == 2.0 and plain["busy_cores"] == 1.9
    assert jobs1["busy_cores"] is None                             # CPU time not known (Ray's actors)
    assert jobs2["maps_identical_to_plain"] and not jobs1["maps_identical_to_plain"]
    out = capsys.readouterr().out
    assert "keeps 1.90 of 2 cores busy" in out and "at most 1.05x" in out
    assert "DIFFER" in out
