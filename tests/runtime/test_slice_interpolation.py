"""--interpolate-slices: which slices may take their neighbours' mean embedding, when they do,
and that everything else about a 3D case stays as it was."""
import numpy as np
import pytest

from conftest import MODELS, CountingModel, StandIn, dice
from qmedsam.cases.read import Case
from qmedsam.image.predictor import ImagePredictor
from qmedsam.image.preprocess import image_to_tensor
from qmedsam.model.folder import EngineError
from qmedsam.model.spec import ENCODER_FLOAT
from qmedsam.precision.guard import Probed
from qmedsam.segment.case_run import CaseRun
from qmedsam.segment.fixed3d import segment_fixed
from qmedsam.segment.interpolation import between, gap_slices, relative_difference
from qmedsam.segment.ledger import Ledger
from qmedsam.segment.options import SegmentOptions

FLOAT = ENCODER_FLOAT.name


def Options(**kw) -> SegmentOptions:
    return SegmentOptions(**dict(dict(interpolate=0), **kw))


def case_run(case, model, opts, ledger=None, known=None) -> CaseRun:
    predictor = ImagePredictor(model, 8, ledger if ledger is not None else Ledger())
    return CaseRun(case, model, opts, FLOAT, predictor, Probed(known or {}))


def test_gaps_are_every_second_inner_slice_of_each_run():
    assert gap_slices(range(7)) == {1, 3, 5}
    assert gap_slices(range(6)) == {1, 3}                     # a run's end is always encoded
    assert gap_slices([0, 1, 2, 5, 6, 7, 8]) == {1, 6}
    assert gap_slices([3]) == set() and gap_slices([3, 4]) == set()


def test_between_takes_the_mean_only_of_close_neighbours():
    a = np.ones((1, 4, 2, 2), np.float32)
    b = a * 1.1
    assert relative_difference(a, a) == 0 and relative_difference(a, b) == pytest.approx(0.1 / np.sqrt(1.1))
    np.testing.assert_allclose(between(a, b, 0.2), a * 1.05)
    assert between(a, b, 0.05) is None and between(a, a, 0.0) is None       # 0: off


class ValueEngine(StandIn):
    """Each slice's embedding is its model input's sum (a constant map); records what the decoder
    is prepared with, and decodes every box to an empty mask."""

    def __init__(self):
        super().__init__()
        self.prepared = []

    def embed(self, tensor, graph):
        return np.full((1, 256, 64, 64), float(tensor.sum()), np.float32)

    def prepare(self, embedding, state=None):
        self.prepared.append(float(embedding[0, 0, 0, 0]))
        return super().prepare(embedding, state)

    def masks(self, embedding, boxes):
        return np.full((len(boxes), 1, 256, 256), -1.0, np.float32), np.zeros(len(boxes), np.float32)


def _volume(depth=9, size=64):
    """A bright square that grows slowly from slice to slice."""
    vol = np.full((depth, size, size), 20, np.uint8)
    for z in range(depth):
        vol[z, 16:30 + z, 16:30 + z] = 220
    return vol


def test_a_gap_slice_gets_the_mean_of_its_encoded_neighbours_or_is_encoded():
    vol = _volume()
    case = Case("3DBox_Syn_0001.npz", vol, np.array([[10, 10, 0, 50, 50, 8]]))
    eng, stats = ValueEngine(), Ledger()
    segment_fixed(case_run(case, eng, Options(interpolate=10.0), stats))
    assert stats.interpolated == [1, 3, 5, 7] and sorted(stats.encoded) == [0, 2, 4, 6, 8] and len(eng.encoded) == 5
    by_slice = dict(zip([0, 2, 1, 4, 3, 6, 5, 8, 7], eng.prepared))          # each gap after its upper neighbour
    for z in (1, 3, 5, 7):
        assert by_slice[z] == pytest.approx((by_slice[z - 1] + by_slice[z + 1]) / 2, rel=1e-6)
    eng, stats = ValueEngine(), Ledger()
    segment_fixed(case_run(case, eng, Options(interpolate=1e-9), stats))          # neighbours never that close
    assert stats.interpolated == [] and sorted(stats.encoded) == list(range(9)) and len(eng.encoded) == 9
    eng, stats = ValueEngine(), Ledger()
    known = {3: np.full((1, 256, 64, 64), -5.0, np.float32)}               # the guard's probe of slice 3
    segment_fixed(case_run(case, eng, Options(interpolate=10.0), stats, known))
    assert stats.interpolated == [1, 5, 7] and len(eng.encoded) == 5 and -5.0 in eng.prepared and not known


@pytest.fixture(scope="module")
def engine():
    from qmedsam.model.model import Model, ModelSettings

    # the float encoder: the same answers on every CPU (the 8-bit one saturates on AVX2-only CPUs,
    # where the interpolated masks fell to a Dice of 0.84 against encoding every slice)
    return Model(MODELS, ModelSettings(float_ops="f32", encoder=FLOAT))


def test_with_the_real_engine_each_slice_is_decoded_once_and_the_masks_stay_close(engine):
    vol = _volume(depth=7, size=96)
    case = Case("3DBox_Syn_0002.npz", vol, np.array([[12, 12, 0, 44, 44, 6], [60, 60, 2, 90, 90, 4]]))
    plain = segment_fixed(case_run(case, engine, Options()))
    counting = CountingModel(engine)
    stats = Ledger()
    seg = segment_fixed(case_run(case, counting, Options(interpolate=10.0), stats))
    assert stats.interpolated == [1, 3, 5] and len(counting.encoded) == 4 == stats.slices_encoded
    assert dice(seg == 1, plain == 1) > 0.9
    same = segment_fixed(case_run(case, engine, Options(interpolate=1e-9)))
    np.testing.assert_array_equal(same, plain)
    # with a probe slice known (the guard's), gap slices 1 and 3 are encoded one after the other
    # while slice 6 is in flight: each slice must still get its own embedding
    known = {4: engine.encode(image_to_tensor(vol[4])[0], FLOAT)[0]}
    probed = segment_fixed(case_run(case, engine, Options(interpolate=1e-9), known=known))
    np.testing.assert_array_equal(probed, plain)


def test_an_encode_never_reuses_a_request_in_flight(engine):
    vol = _volume(depth=3, size=96)
    x = [image_to_tensor(vol[z])[0] for z in range(3)]
    alone = [engine.encode(t, FLOAT)[0] for t in x]
    first = engine.start_encode(x[0], FLOAT)
    second, third = engine.encode(x[1], FLOAT)[0], engine.encode(x[2], FLOAT)[0]     # the other request, twice
    np.testing.assert_array_equal(engine.finish_encode(first), alone[0])
    np.testing.assert_array_equal(second, alone[1])
    np.testing.assert_array_equal(third, alone[2])
    handles = [engine.start_encode(t, FLOAT) for t in x[:2]]
    with pytest.raises(EngineError, match="in flight"):
        engine.start_encode(x[2], FLOAT)
    for h in handles:
        engine.finish_encode(h)
    case = Case("3DBox_Syn_0003.npz", vol, np.array([[12, 12, 0, 44, 44, 2]]))
    sweep = case_run(case, engine, Options(overlap=True)).slices(range(3))
    next(sweep)                                    # slice 1 now in flight
    sweep.close()                                  # a case that fails here frees its request
    for h in [engine.start_encode(t, FLOAT) for t in x[:2]]:
        engine.finish_encode(h)


def test_the_predictor_interpolates_by_default_and_the_option_turns_it_off(monkeypatch):
    from qmedsam.predict import parse_args
    from qmedsam.segment.interpolation import DEFAULT_TAU

    assert parse_args(["-i", "x", "-o", "y"]).interpolate_slices == DEFAULT_TAU > 0
    assert parse_args(["-i", "x", "-o", "y", "--interpolate-slices", "0"]).interpolate_slices == 0
    monkeypatch.setenv("QMEDSAM_INTERPOLATE_SLICES", "0.25")
    assert parse_args(["-i", "x", "-o", "y"]).interpolate_slices == 0.25
