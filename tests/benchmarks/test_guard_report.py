"""bench-guard's reading of the shipped guard rule from its probe statistics."""
from benchmarks.bench_guard import sequential
from qmedsam.precision.guard import MIN_DICE, SURE_DICE


def _probes(*weighted):
    return {f"ends of smallest, {n}": {"lowest": None, "weighted": w} for n, w in enumerate(weighted, 1)}


def test_a_clear_first_probe_ends_the_probing():
    assert sequential(_probes(SURE_DICE, MIN_DICE - 0.1, MIN_DICE - 0.1)) == (True, 1)
    assert sequential(_probes(None, SURE_DICE + 0.01, 0.5)) == (True, 2)


def test_otherwise_all_probes_are_judged_at_the_threshold():
    assert sequential(_probes(SURE_DICE - 0.01, 0.9, MIN_DICE)) == (True, 3)
    assert sequential(_probes(SURE_DICE - 0.01, 0.99, MIN_DICE - 0.001)) == (True, 2)
    assert sequential(_probes(0.95, 0.92, MIN_DICE - 0.001)) == (False, 3)
    assert sequential(_probes(None, None, None)) == (True, 3)
