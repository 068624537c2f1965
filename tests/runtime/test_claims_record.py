"""Per-case claims (one process on a case at a time; a dead holder's claim is free again; a retry
of the same run finds the result) and efficiency.csv merged by every writer of an outputs folder."""
import csv
import subprocess
import sys
from pathlib import Path

from qmedsam.run.claims import FOLDER, claimed, release, remove_folder
from qmedsam.run.record import RunRecord, read_rows


def test_a_held_claim_keeps_others_off_and_a_finished_one_answers_the_same_runs_retry(tmp_path):
    with claimed(tmp_path, "a.npz", "run1") as first:
        assert first is not None and first.done is None
        with claimed(tmp_path, "a.npz", "run2") as second:
            assert second is None                                  # held: someone else's now
        first.finish({"case": "a.npz", "row": {"case": "a.npz"}})
    with claimed(tmp_path, "a.npz", "run1") as retry:
        assert retry.done == {"case": "a.npz", "row": {"case": "a.npz"}}
    with claimed(tmp_path, "a.npz", "run2") as other_run:          # another run computes it again
        assert other_run is not None and other_run.done is None
    release(tmp_path, "a.npz")
    remove_folder(tmp_path)
    assert not (tmp_path / FOLDER).exists()


def test_a_killed_holders_claim_is_free_again_and_its_temporary_files_go(tmp_path):
    code = ("import sys, time; from pathlib import Path; from qmedsam.run.claims import claimed\n"
            "with claimed(Path(sys.argv[1]), 'a.npz', 'r') as c:\n"
            "    print('held', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with claimed(tmp_path, "a.npz", "r2") as c:
        assert c is None
    holder.kill()
    holder.wait()
    (tmp_path / ".a.npz.x1y2.part").write_bytes(b"half")              # what a killed writer leaves
    (tmp_path / ".b.npz.x1y2.part").write_bytes(b"half")              # another case's: not ours
    with claimed(tmp_path, "a.npz", "r2") as c:
        assert c is not None
        c.clear_partials(tmp_path, "a.npz")
    assert sorted(p.name for p in tmp_path.glob("*.part")) == [".b.npz.x1y2.part"]


def _row(case, seconds):
    return {"case": case, "seconds": seconds, "status": "ok"}


def test_two_records_on_one_folder_keep_each_others_rows(tmp_path):
    inputs = [Path(f"{c}.npz") for c in "abc"]
    one, two = RunRecord(tmp_path, inputs), RunRecord(tmp_path, inputs)
    one.add(_row("a.npz", "1"))
    two.add(_row("b.npz", "2"))
    one.add(_row("c.npz", "3"))
    one.write()
    rows = read_rows(tmp_path)
    assert [rows[k]["seconds"] for k in sorted(rows)] == ["1", "2", "3"]


def test_rows_of_cases_no_longer_among_the_inputs_are_dropped(tmp_path):
    old = RunRecord(tmp_path, [Path("gone.npz"), Path("a.npz")])
    old.add(_row("gone.npz", "9"))
    old.write()
    new = RunRecord(tmp_path, [Path("a.npz")])
    new.add(_row("a.npz", "1"))
    new.write()
    with open(tmp_path / "efficiency.csv", newline="") as f:
        assert [r["case"] for r in csv.DictReader(f)] == ["a.npz"]


def test_a_record_rewrites_the_file_at_most_every_few_seconds(tmp_path, monkeypatch):
    import qmedsam.run.record as rr

    now = [100.0]
    monkeypatch.setattr(rr.time, "monotonic", lambda: now[0])
    record = RunRecord(tmp_path, [Path("a.npz"), Path("b.npz")])
    record.add(_row("a.npz", "1"))
    assert set(read_rows(tmp_path)) == {"a.npz"}
    record.add(_row("b.npz", "2"))
    assert set(read_rows(tmp_path)) == {"a.npz"}                  # within FLUSH_EVERY_S: not yet
    now[0] += rr.FLUSH_EVERY_S
    record.add(_row("b.npz", "2"))
    assert set(read_rows(tmp_path)) == {"a.npz", "b.npz"}
