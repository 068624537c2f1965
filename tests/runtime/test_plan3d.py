import numpy as np

from qmedsam.segment.store import EmbeddingStore
from qmedsam.segment.plan3d import fixed_plan, middle_slice, propagation_plan

BOXES = np.array([[0, 0, 2, 5, 5, 6], [1, 1, 4, 6, 6, 9], [0, 0, 0, 3, 3, 0]])


def test_fixed_plan_covers_each_box_slice_once():
    plan = fixed_plan(BOXES)
    assert list(plan) == sorted(plan)
    pairs = sorted((z, i) for z, idx in plan.items() for i in idx)
    expected = sorted((z, i) for i, b in enumerate(BOXES) for z in range(b[2], b[5] + 1))
    assert pairs == expected


def test_propagation_plan_sweeps():
    plan = propagation_plan(BOXES)
    assert plan.middle.tolist() == [middle_slice(2, 6), middle_slice(4, 9), 0] == [4, 6, 0]
    assert list(plan.up) == sorted(plan.up) and list(plan.down) == sorted(plan.down, reverse=True)
    for i, b in enumerate(BOXES):
        visited = [z for z, idx in plan.up.items() if i in idx] + [z for z, idx in plan.down.items() if i in idx]
        assert sorted(visited) == list(range(b[2], b[5] + 1))
    assert plan.reused() == set(plan.up) & set(plan.down)


def test_embedding_store_spills_beyond_budget_and_returns_exact_arrays():
    rng = np.random.default_rng(0)
    arrays = {z: rng.normal(size=(4, 8, 8)).astype(np.float32) for z in range(40)}
    store = EmbeddingStore(budget_bytes=3 * arrays[0].nbytes)
    for z, a in arrays.items():
        store.put(z, a)
    assert len(store.ram) == 3 and len(store.disk) == 37
    for z in reversed(range(40)):
        np.testing.assert_array_equal(store.pop(z), arrays[z])
    assert store.pop(0) is None
    store.close()
