"""The int8 guard (qmedsam.precision.guard): probe choice, the judgement, and the switch of encoder,
with a scripted two-encoder stand-in; and the real engine's fallback encoder."""
import numpy as np
import pytest

from conftest import MODELS, StandIn
from qmedsam.cases.read import Case
from qmedsam.image.predictor import ImagePredictor
from qmedsam.image.preprocess import Geometry
from qmedsam.model.folder import EngineError
from qmedsam.model.model import Model, ModelSettings
from qmedsam.model.spec import ENCODER, ENCODER_FLOAT
from qmedsam.precision import guard as int8_guard
from qmedsam.precision.policy import Plan
from qmedsam.segment.case_run import segment_case
from qmedsam.segment.options import SegmentOptions

GUARDED = Plan(ENCODER.name, True, "test: int8 probed by the guard")   # what the policy plans for long cases
INT8, FLOAT = Plan(ENCODER.name, False, ""), Plan(ENCODER_FLOAT.name, False, "")
EVERY = SegmentOptions(interpolate=0)                                   # every slice encoded


def test_probe_slices_are_the_ends_of_the_smallest_boxes_first():
    boxes = np.array([[0, 0, 2, 100, 100, 20],      # large
                      [10, 10, 5, 20, 20, 9],       # smallest
                      [0, 0, 9, 50, 50, 30]])       # middle-sized: z 9 already picked
    assert int8_guard.probe_slices(boxes, 3) == [5, 9, 30]
    assert int8_guard.probe_slices(boxes, 10) == [5, 9, 30, 2, 20]
    assert int8_guard.probe_slices(boxes[:1], 3) == [2, 20]


def test_probe_agreement_is_the_dice_of_all_probed_pixels_together():
    a = np.zeros((32, 32), bool)
    b = a.copy()
    a[:4, :4] = True                  # 16 px
    b[:4, :2] = True                  # 8 px, inside a
    tiny, empty = np.zeros_like(a), np.zeros_like(a)
    tiny[0, 10:12] = True             # 2 px, float finds nothing: weighs by its size only
    assert int8_guard.pixel_dice([(a, b), (tiny, empty)]) == pytest.approx(2 * 8 / (16 + 8 + 2))
    assert int8_guard.pixel_dice([(empty, empty)]) is None


def test_judge_keeps_int8_at_or_above_the_threshold_and_falls_back_below():
    t = int8_guard.MIN_DICE
    assert int8_guard.judge(t, "i", "f", [1]).encoder == "i"
    assert int8_guard.judge(None, "i", "f", [1]).encoder == "i"
    low = int8_guard.judge(t - 0.01, "i", "f", [1, 2])
    assert low.encoder == "f" and "[1, 2]" in low.reason and low.agreement == t - 0.01


class TwoEncoders(StandIn):
    """Each encoder's embedding is a constant (int8: ``shift``, float: 0); a box decodes to its
    own rectangle, shrunk by the embedding's value in pixels, so a shift makes int8 masks smaller."""

    def __init__(self, shift: float):
        super().__init__()
        self.shift = shift

    def embed(self, tensor, graph):
        return np.full((1, 256, 64, 64), self.shift if graph == ENCODER.name else 0.0, np.float32)

    def masks(self, embedding, boxes):
        out = np.full((len(boxes), 1, 256, 256), -1.0, np.float32)
        s = int(embedding.flat[0])
        for k, (x0, y0, x1, y1) in enumerate(boxes[:, 0].astype(int)):
            out[k, 0, y0 + s:y1 - s, x0 + s:x1 - s] = 1.0
        return out, np.ones(len(boxes), np.float32)


def _volume_case():
    vol = np.random.default_rng(0).integers(0, 255, (12, 64, 64), dtype=np.uint8)
    return Case("3DBox_MR_0001.npz", vol, np.array([[8, 8, 2, 40, 40, 9], [4, 4, 5, 60, 60, 11]]))


def _shrunk_dice(shift: int) -> float:
    """The Dice of the double's first probe: the 8..40 box of the 64-px volume (128 px in the
    256 grid) against itself shrunk by ``shift`` px a side."""
    side = 128 - 2 * shift
    return 2 * side ** 2 / (128 ** 2 + side ** 2)


@pytest.mark.parametrize("shift, expected, probes", [(0, ENCODER.name, (2,)), (1, ENCODER.name, (2,)),
                                                     (4, ENCODER.name, (2, 9, 5)),
                                                     (12, ENCODER_FLOAT.name, (2, 9, 5))])
def test_a_3d_case_runs_in_float_only_where_its_probes_disagree(shift, expected, probes):
    """Probes go one slice at a time and stop at the first clear agreement (shift 0, 1); an
    agreement between MIN_DICE and SURE_DICE (shift 4) takes every probe slice."""
    assert (_shrunk_dice(1) >= int8_guard.SURE_DICE > _shrunk_dice(4) >= int8_guard.MIN_DICE > _shrunk_dice(12))
    eng = TwoEncoders(shift)
    seg, stats = segment_case(_volume_case(), eng, GUARDED, EVERY)
    assert stats.verdict.encoder == expected == stats.encoder
    assert stats.verdict.probes == probes
    # the probes are encoded by both encoders; the case by the chosen one, each slice once: its
    # probe slices' embeddings are taken from the probes
    other = ENCODER_FLOAT.name if expected == ENCODER.name else ENCODER.name
    assert eng.encoded.count(expected) == stats.slices_encoded and eng.encoded.count(other) == len(probes)
    assert stats.slices_encoded == 10 and seg.max() == 2
    # the encoder the case does not run gives its scratch memory back before the case's own pass
    assert eng.released == [other]


@pytest.mark.parametrize("mode", ["fixed", "propagate", "guided"])
@pytest.mark.parametrize("shift", [1, 4, 12])  # 4 px in the 256 grid: 1 px of the 64-px volume
def test_the_probes_embeddings_stand_in_for_the_cases_own(mode, shift):
    """The chosen encoder's probe embeddings are reused by every 3D mode, and no slice is encoded
    twice by it: the label map equals the one the same encoder gives without the guard, except
    that in the fixed mode a case kept in int8 has the float masks on its probe slices."""
    guarded = TwoEncoders(shift)
    opts = SegmentOptions(mode_3d=mode, interpolate=0)
    seg, stats = segment_case(_volume_case(), guarded, GUARDED, opts)
    plain = TwoEncoders(shift)
    ref, ref_stats = segment_case(_volume_case(), plain, Plan(stats.verdict.encoder, False, ""), opts)
    if mode == "fixed" and stats.verdict.encoder == ENCODER.name:
        probes = list(stats.verdict.probes)
        float_ref, _ = segment_case(_volume_case(), TwoEncoders(shift), FLOAT, opts)
        np.testing.assert_array_equal(seg[probes], float_ref[probes])
        if shift >= 4:                                   # a pixel of the volume or more
            assert (seg[probes] != ref[probes]).any()    # the double's int8 masks are smaller
        ref[probes] = float_ref[probes]
    np.testing.assert_array_equal(seg, ref)
    assert sorted(stats.encoded) == sorted(ref_stats.encoded)
    assert guarded.encoded.count(stats.verdict.encoder) == plain.encoded.count(stats.verdict.encoder)
    # the probes decode each probe slice against both encoders (one call each here); in the fixed
    # mode a case kept in int8 pastes its probe slices' float masks instead of decoding them again
    n = len(stats.verdict.probes)
    probe_calls = n if mode == "fixed" and stats.verdict.encoder == ENCODER.name else 2 * n
    assert stats.decoder_calls == ref_stats.decoder_calls + probe_calls


def test_probe_masks_are_kept_only_within_their_memory_budget(monkeypatch):
    monkeypatch.setattr(int8_guard, "KEEP_BYTES", 0)
    seg, stats = segment_case(_volume_case(), TwoEncoders(4), GUARDED, EVERY)
    ref, ref_stats = segment_case(_volume_case(), TwoEncoders(4), INT8, EVERY)
    np.testing.assert_array_equal(seg, ref)
    assert stats.decoder_calls == ref_stats.decoder_calls + 6


def test_auto_runs_a_2d_case_in_float_and_a_guarded_volume_starts_from_int8_again():
    from qmedsam.precision.cpu import CpuFacts
    from qmedsam.precision.setting import Precision

    auto = Precision.resolve("auto", MODELS, cpu=CpuFacts({"avx512f", "avx512_vnni"}, ""))
    eng = TwoEncoders(0)
    img = np.zeros((64, 64, 3), np.uint8)
    _, stats = segment_case(Case("2DBox_MR_0001.npz", img, np.array([[4, 4, 40, 40]])), eng, auto.plan(False, None))
    assert stats.verdict is None and stats.encoder == ENCODER_FLOAT.name and eng.encoded == [ENCODER_FLOAT.name]
    _, stats = segment_case(_volume_case(), eng, GUARDED)
    assert stats.verdict.encoder == ENCODER.name


def test_without_the_guard_the_plans_encoder_runs_every_pass():
    eng = TwoEncoders(12)
    _, stats = segment_case(_volume_case(), eng, INT8)
    assert stats.verdict is None and ENCODER_FLOAT.name not in eng.encoded and stats.encoder == ENCODER.name


@pytest.fixture(scope="module")
def guarded_model():
    return Model(MODELS, ModelSettings(float_ops="f32", also=ENCODER_FLOAT.name))


def test_the_model_encodes_with_the_encoder_it_is_told(guarded_model):
    x = np.random.default_rng(1).random((1, 3, 256, 256), dtype=np.float32)
    float_only = Model(MODELS, ModelSettings(float_ops="f32", encoder=ENCODER_FLOAT.name))
    floats = guarded_model.encode(x, ENCODER_FLOAT.name)[0]
    np.testing.assert_array_equal(floats, float_only.encode(x, ENCODER_FLOAT.name)[0])
    int8 = guarded_model.encode(x, ENCODER.name)[0]
    assert not np.array_equal(int8, floats)
    np.testing.assert_array_equal(guarded_model.encode(x, ENCODER.name)[0], int8)


def test_a_released_encoder_encodes_as_before(guarded_model):
    x = np.random.default_rng(2).random((1, 3, 256, 256), dtype=np.float32)
    before, _ = guarded_model.encode(x, ENCODER_FLOAT.name)
    guarded_model.release_encoder(ENCODER_FLOAT.name)
    guarded_model.release_encoder("encoder_not_loaded")       # nothing to give back: no error
    np.testing.assert_array_equal(guarded_model.encode(x, ENCODER_FLOAT.name)[0], before)


def test_an_encoder_loads_on_first_use_and_one_not_in_the_folder_is_refused(tmp_path):
    model = Model(MODELS, ModelSettings(float_ops="f32"))
    assert ENCODER_FLOAT.name not in model.load_seconds
    model.encode(np.zeros((1, 3, 256, 256), np.float32), ENCODER_FLOAT.name)   # a later case's plan: loaded once
    assert ENCODER_FLOAT.name in model.load_seconds
    with pytest.raises(EngineError, match="no encoder graph"):
        model.encode(np.zeros((1, 3, 256, 256), np.float32), "encoder_unknown")


def test_the_probes_decode_the_same_boxes_against_both_encoders(guarded_model):
    case = _volume_case()
    predictor = ImagePredictor(guarded_model, 8)
    verdict, probed = int8_guard.choose(case, guarded_model, predictor, ENCODER.name)
    assert verdict.probes and set(probed.embeddings) == set(verdict.probes)
    assert predictor.ledger.encoder_passes == {ENCODER.name: len(verdict.probes), ENCODER_FLOAT.name: len(verdict.probes)}
    prompts = int8_guard.probe_prompts(case.boxes, Geometry(64, 64), list(verdict.probes))
    assert predictor.ledger.boxes_decoded == 2 * sum(len(b) for b in prompts.values())


def test_the_float_encoder_runs_in_f32_beside_the_int8_models_float_setting():
    """Under --float-ops auto the float encoder (loaded first or beside) is compiled in f32, the
    float model's arithmetic on every CPU; the decoder keeps the int8 models' setting."""
    from qmedsam.precision.cpu import cpu_flags

    x = np.random.default_rng(2).random((1, 3, 256, 256), dtype=np.float32)
    name = ENCODER_FLOAT.name
    f32 = Model(MODELS, ModelSettings(float_ops="f32", encoder=name)).encode(x, name)[0]
    first = Model(MODELS, ModelSettings(float_ops="auto", encoder=name))
    np.testing.assert_array_equal(first.encode(x, name)[0], f32)
    beside = Model(MODELS, ModelSettings(float_ops="auto", also=name))
    np.testing.assert_array_equal(beside.encode(x, name)[0], f32)
    bf16 = Model(MODELS, ModelSettings(float_ops="bf16", encoder=name)).encode(x, name)[0]
    if "avx512_bf16" in cpu_flags() or "amx_bf16" in cpu_flags():      # asked for, bf16 is taken
        assert not np.array_equal(bf16, f32)


@pytest.mark.wide
def test_2d_cases_get_the_float_answer_whatever_runs_beside_them(tmp_path):
    """--precision auto: a folder of 2D cases loads only the float encoder and the decoder; in a
    folder with a 3D case beside it, the guard sends the 2D case to float: the same map."""
    import shutil
    import subprocess
    import sys

    from conftest import ROOT, SAMPLES

    def predict(names, out):
        inputs = tmp_path / f"in-{out}"
        inputs.mkdir()
        for n in names:
            shutil.copy(SAMPLES / "inputs" / n, inputs)
        run = subprocess.run([sys.executable, "-m", "qmedsam.predict", "-i", str(inputs), "-o", str(tmp_path / out),
                              "-v", "--cache", "none"], cwd=ROOT, capture_output=True, encoding="utf-8",
                             errors="replace", timeout=600)
        assert run.returncode == 0, run.stderr
        return run.stderr, (tmp_path / out / "efficiency.csv").read_text()

    from qmedsam.precision.setting import choose_encoder

    two_d = "2DBox_CT_0002.npz"
    said, csv = predict([two_d], "alone")
    assert ",float,ok" in csv and "encoder_w7" not in csv
    said_mixed, csv_mixed = predict([two_d, "3DBox_CT_0001.npz"], "mixed")
    encoder, _ = choose_encoder("auto")
    if encoder == ENCODER_FLOAT.name:      # a CPU where int8 does not pay: float for every case, no guard
        assert "guard:" not in csv_mixed
    else:                                  # the 34-slice volume pays for the guard: int8 loads for it only
        assert "int8+guard" in csv_mixed.splitlines()[2] and "encoder_w7" in csv_mixed.splitlines()[2]
    np.testing.assert_array_equal(np.load(tmp_path / "alone" / two_d)["segs"],
                                  np.load(tmp_path / "mixed" / two_d)["segs"])
