"""bench-int8-signals' verdict: how many images an int8-only signal lets skip the float pass while
every image where int8 departs is still caught."""
from benchmarks.bench_int8_signals import analyse


def _row(name, agreement, stability, near=0.1, iou=0.9):
    return {"image": name, "agreement": agreement, "stability": stability, "near": near, "iou": iou}


def test_a_signal_that_ranks_like_the_agreement_lets_the_safe_images_skip():
    rows = [_row("bad", 0.80, 0.70), _row("ok1", 0.99, 0.95), _row("ok2", 0.98, 0.90), _row("ok3", 0.97, 0.60)]
    lines = analyse(rows, 0.93)
    assert "bad 0.800" in lines[0]
    stability = next(line for line in lines if line.strip().startswith("stability"))
    assert "lets 2 of 3 images skip" in stability           # ok3 is under the departing image's 0.70


def test_without_a_departure_nothing_is_claimed():
    lines = analyse([_row("a", 0.99, 0.9), _row("b", 0.98, 0.8)], 0.93)
    assert all("no departure" in line for line in lines[1:])
