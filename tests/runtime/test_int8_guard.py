"""The int8 guard (qmedsam.int8_guard): probe choice, the judgement, and the switch of encoder,
with a scripted two-encoder stand-in; and the real engine's fallback encoder."""
import numpy as np
import pytest

from conftest import MODELS
from qmedsam import int8_guard
from qmedsam.cases import Case
from qmedsam.engine import Engine, EngineOptions, EngineError
from qmedsam.image_session import ImageSession
from qmedsam.model_spec import ENCODER, ENCODER_FLOAT
from qmedsam.policy import Plan
from qmedsam.segment import Options, Stats, segment_case

GUARDED = Plan(ENCODER.name, True, "test: int8 probed by the guard")   # what the policy plans for long cases


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


class TwoEncoders:
    """Each encoder's embedding is a constant (int8: ``shift``, float: 0); a box decodes to its
    own rectangle, shrunk by the embedding's value in pixels, so a shift makes int8 masks smaller."""

    def __init__(self, shift: float):
        self.shift = shift
        self.encoder = self.primary = ENCODER.name
        self.fallback = ENCODER_FLOAT.name
        self.encoded = {ENCODER.name: 0, ENCODER_FLOAT.name: 0}
        self.released: list[str] = []              # encoder graphs whose scratch was given back
        self._emb = 0.0

    def use_encoder(self, name):
        self.encoder = name

    def _embed(self, name):
        self.encoded[name] += 1
        return np.full((1, 256, 64, 64), self.shift if name == ENCODER.name else 0.0, np.float32)

    def encode_with(self, name, tensor):
        return self._embed(name)

    def start_encode(self, tensor):
        return tensor

    def finish_encode(self, handle):
        return self._embed(self.encoder)

    def encode(self, tensor):
        return self.finish_encode(tensor)

    def prepare(self, emb):
        self._emb = float(emb.flat[0])

    def release(self, graph):
        pass

    def release_encoder(self, name):
        self.released.append(name)

    def decode(self, boxes, with_iou=False):
        out = np.full((len(boxes), 1, 256, 256), -1.0, np.float32)
        s = int(self._emb)
        for k, (x0, y0, x1, y1) in enumerate(boxes[:, 0].astype(int)):
            out[k, 0, y0 + s:y1 - s, x0 + s:x1 - s] = 1.0
        return (out, np.ones(len(boxes), np.float32)) if with_iou else out


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
    seg, stats = segment_case(_volume_case(), eng, Options(plan=GUARDED))
    assert stats.verdict.encoder == expected == eng.encoder
    assert stats.verdict.probes == probes
    # the probes are encoded by both encoders; the case by the chosen one, each slice once: its
    # probe slices' embeddings are taken from the probes
    other = ENCODER_FLOAT.name if expected == ENCODER.name else ENCODER.name
    assert eng.encoded[expected] == stats.slices_encoded and eng.encoded[other] == len(probes)
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
    seg, stats = segment_case(_volume_case(), guarded, Options(plan=GUARDED, mode_3d=mode))
    plain = TwoEncoders(shift)
    plain.use_encoder(stats.verdict.encoder)
    ref, ref_stats = segment_case(_volume_case(), plain, Options(mode_3d=mode))
    if mode == "fixed" and stats.verdict.encoder == ENCODER.name:
        probes = list(stats.verdict.probes)
        floats = TwoEncoders(shift)
        floats.use_encoder(ENCODER_FLOAT.name)
        float_ref, _ = segment_case(_volume_case(), floats, Options(mode_3d=mode))
        np.testing.assert_array_equal(seg[probes], float_ref[probes])
        if shift >= 4:                                   # a pixel of the volume or more
            assert (seg[probes] != ref[probes]).any()    # the double's int8 masks are smaller
        ref[probes] = float_ref[probes]
    np.testing.assert_array_equal(seg, ref)
    assert sorted(stats.encoded) == sorted(ref_stats.encoded)
    assert guarded.encoded[stats.verdict.encoder] == plain.encoded[stats.verdict.encoder]
    # the probes decode each probe slice against both encoders (one call each here); in the fixed
    # mode a case kept in int8 pastes its probe slices' float masks instead of decoding them again
    n = len(stats.verdict.probes)
    probe_calls = n if mode == "fixed" and stats.verdict.encoder == ENCODER.name else 2 * n
    assert stats.decoder_calls == ref_stats.decoder_calls + probe_calls


def test_probe_masks_are_kept_only_within_their_memory_budget(monkeypatch):
    monkeypatch.setattr(int8_guard, "KEEP_BYTES", 0)
    seg, stats = segment_case(_volume_case(), TwoEncoders(4), Options(plan=GUARDED))
    ref, ref_stats = segment_case(_volume_case(), TwoEncoders(4), Options())
    np.testing.assert_array_equal(seg, ref)
    assert stats.decoder_calls == ref_stats.decoder_calls + 6


def test_a_2d_case_runs_in_float_and_the_next_case_starts_from_int8_again():
    eng = TwoEncoders(0)
    img = np.zeros((64, 64, 3), np.uint8)
    _, stats = segment_case(Case("2DBox_MR_0001.npz", img, np.array([[4, 4, 40, 40]])), eng, Options(plan=GUARDED))
    assert stats.verdict.encoder == ENCODER_FLOAT.name and eng.encoded == {ENCODER.name: 0, ENCODER_FLOAT.name: 1}
    _, stats = segment_case(_volume_case(), eng, Options(plan=GUARDED))
    assert stats.verdict.encoder == ENCODER.name


def test_without_the_guard_or_a_fallback_the_engine_is_left_alone():
    eng = TwoEncoders(12)
    _, stats = segment_case(_volume_case(), eng, Options())
    assert stats.verdict is None and eng.encoded[ENCODER_FLOAT.name] == 0
    eng.has_encoder = lambda name: name != ENCODER_FLOAT.name      # a models folder with no float encoder
    _, stats = segment_case(_volume_case(), eng, Options(guard=True))
    assert stats.verdict is None and eng.encoded[ENCODER_FLOAT.name] == 0


@pytest.fixture(scope="module")
def guarded_engine():
    return Engine(MODELS, EngineOptions(float_precision="f32", fallback=ENCODER_FLOAT.name))


def test_the_fallback_encoder_is_the_float_encoder(guarded_engine):
    x = np.random.default_rng(1).random((1, 3, 256, 256), dtype=np.float32)
    float_only = Engine(MODELS, EngineOptions(float_precision="f32", encoder=ENCODER_FLOAT.name))
    np.testing.assert_array_equal(guarded_engine.encode_with(ENCODER_FLOAT.name, x), float_only.encode(x))
    int8 = guarded_engine.encode(x)
    guarded_engine.use_encoder(ENCODER_FLOAT.name)
    try:
        np.testing.assert_array_equal(guarded_engine.encode(x), float_only.encode(x))
        assert not np.array_equal(int8, guarded_engine.encode(x))
    finally:
        guarded_engine.use_encoder(ENCODER.name)
    np.testing.assert_array_equal(guarded_engine.encode(x), int8)


def test_a_released_encoder_encodes_as_before(guarded_engine):
    x = np.random.default_rng(2).random((1, 3, 256, 256), dtype=np.float32)
    before = guarded_engine.encode_with(ENCODER_FLOAT.name, x)
    guarded_engine.release_encoder(ENCODER_FLOAT.name)
    guarded_engine.release_encoder("encoder_not_loaded")       # nothing to give back: no error
    np.testing.assert_array_equal(guarded_engine.encode_with(ENCODER_FLOAT.name, x), before)


def test_an_encoder_loads_on_first_use_and_one_not_in_the_folder_is_refused(tmp_path):
    engine = Engine(MODELS, EngineOptions(float_precision="f32"))
    assert ENCODER_FLOAT.name not in engine.load_seconds
    engine.use_encoder(ENCODER_FLOAT.name)                 # a later case's plan: loaded then, once
    assert engine.encoder == ENCODER_FLOAT.name and ENCODER_FLOAT.name in engine.load_seconds
    with pytest.raises(EngineError, match="no encoder graph"):
        engine.use_encoder("encoder_unknown")


def test_probe_pairs_decode_the_same_boxes_against_both_encoders(guarded_engine):
    case = _volume_case()
    zs = [2, 9]                     # slice 2 holds the first box, slice 9 both
    prompts = int8_guard.probe_prompts(case.boxes, int8_guard.Geometry(64, 64), zs)
    session = lambda emb: ImageSession(guarded_engine, 8, Stats()).set_image(emb)   # noqa: E731
    embeddings = int8_guard.encode_probes(guarded_engine, (ENCODER.name, ENCODER_FLOAT.name), case.image, zs)
    assert {name: sorted(e) for name, e in embeddings.items()} == {ENCODER.name: zs, ENCODER_FLOAT.name: zs}
    pairs = list(int8_guard.probe_pairs(embeddings, (ENCODER.name, ENCODER_FLOAT.name), prompts,
                                        int8_guard.Geometry(64, 64), session))
    assert len(pairs) == 1 + 2 and all(a.shape == b.shape == (256, 256) for a, b in pairs)


def test_the_float_encoder_runs_in_f32_beside_the_int8_models_float_setting():
    """Under --float-ops auto the float encoder (primary or fallback) is compiled in f32, the
    float model's arithmetic on every CPU; the decoder keeps the int8 models' setting."""
    from qmedsam.encoder_choice import cpu_flags

    x = np.random.default_rng(2).random((1, 3, 256, 256), dtype=np.float32)
    f32 = Engine(MODELS, EngineOptions(float_precision="f32", encoder=ENCODER_FLOAT.name)).encode(x)
    primary = Engine(MODELS, EngineOptions(float_precision="auto", encoder=ENCODER_FLOAT.name))
    np.testing.assert_array_equal(primary.encode(x), f32)
    fallback = Engine(MODELS, EngineOptions(float_precision="auto", fallback=ENCODER_FLOAT.name))
    np.testing.assert_array_equal(fallback.encode_with(ENCODER_FLOAT.name, x), f32)
    bf16 = Engine(MODELS, EngineOptions(float_precision="bf16", encoder=ENCODER_FLOAT.name)).encode(x)
    if "avx512_bf16" in cpu_flags() or "amx_bf16" in cpu_flags():      # asked for, bf16 is taken
        assert not np.array_equal(bf16, f32)


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

    from qmedsam.encoder_choice import choose_encoder

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
