"""The runtime predictor on real and synthetic cases, with the committed int8 models."""
import csv
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import MODELS, ROOT, SAMPLES, CountingModel, dice
from qmedsam.cases.read import Case, load_case
from qmedsam.model.model import Model, ModelSettings
from qmedsam.model.spec import ENCODER
from qmedsam.precision.policy import Plan
from qmedsam.predict import main
from qmedsam.segment.case_run import segment_case
from qmedsam.segment.options import SegmentOptions

INT8 = Plan(ENCODER.name, False, "")


def Options(**kw) -> SegmentOptions:
    """Segmenting options with every slice encoded (no interpolation), as these tests count them."""
    return SegmentOptions(**dict(dict(interpolate=0), **kw))

pytestmark = pytest.mark.skipif(not (MODELS / "encoder.xml").exists(), reason="run `make export` first")


@pytest.fixture(scope="session")
def engine(tmp_path_factory):
    return Model(MODELS, ModelSettings(cache_dir=tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def sample_outputs(tmp_path_factory):
    out = tmp_path_factory.mktemp("outputs")
    code = main(["-i", str(SAMPLES / "inputs"), "-o", str(out), "--cache", str(out.parent / "c1")])
    return code, out


def test_sample_outputs_follow_the_contract(sample_outputs):
    code, out = sample_outputs
    assert code == 0
    inputs = sorted((SAMPLES / "inputs").glob("*.npz"))
    assert sorted(p.name for p in out.glob("*.npz")) == [p.name for p in inputs]
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.is_file()]  # no temp files
    for p in inputs:
        case = load_case(p)
        with np.load(out / p.name) as res:
            assert res.files == ["segs"]
            segs = res["segs"]
        assert segs.shape == case.label_shape and segs.dtype == np.uint8
        assert segs.max() <= len(case.boxes)
    rows = (out / "efficiency.csv").read_text().splitlines()
    assert rows[0].startswith("case,seconds,boxes,slices_encoded") and len(rows) == len(inputs) + 1
    # which encoder ran each case: the guard runs 2D images in float, 3D volumes as their probes say
    precision = dict(zip((r.split(",")[0] for r in rows[1:]),
                         (r.split(",")[rows[0].split(",").index("precision")] for r in rows[1:])))
    assert all(precision[p.name] == "float" for p in inputs if p.name.startswith("2D"))
    assert all(precision[p.name] in ("int8", "float") for p in inputs)


def test_default_predictions_are_accurate_on_real_labels(sample_outputs):
    """The shipped settings (int8 or float encoder as the CPU decides) on real labels: the lungs,
    and the chest's small structures inside larger ones, which only the highest-logit overlap
    rule keeps (all 7 labels: mean Dice ~0.57 with it, ~0.38 with 'later box wins')."""
    _, out = sample_outputs
    gt = np.load(SAMPLES / "gts" / "3DBox_CT_0001.npz")["gts"]
    seg = np.load(out / "3DBox_CT_0001.npz")["segs"]
    lungs = [dice(seg == k, gt == k) for k in (5, 6)]          # right, left lung
    assert min(lungs) > 0.8, lungs
    every = [dice(seg == k, gt == k) for k in range(1, 8)]
    assert np.mean(every) > 0.5, every
    gt = np.load(SAMPLES / "gts" / "2DBox_Microscope_0003.npz")["gts"]
    seg = np.load(out / "2DBox_Microscope_0003.npz")["segs"]
    nuclei = [dice(seg == k, gt == k) for k in range(1, gt.max() + 1)]
    assert np.median(nuclei) > 0.8, np.median(nuclei)


def _first_slices(name: str, depth: int, boxes: int) -> Case:
    """The first ``depth`` slices of a sample volume with up to ``boxes`` of its boxes that reach
    them, cut to them: a short real case."""
    case = load_case(SAMPLES / "inputs" / name)
    keep = case.boxes[case.boxes[:, 2] < depth][:boxes].copy()
    keep[:, 5] = np.minimum(keep[:, 5], depth - 1)
    return Case(name, np.ascontiguousarray(case.image[:depth]), keep, case.spacing)


@pytest.mark.parametrize("mode", ["fixed", "propagate", "guided"])
def test_every_slice_is_encoded_exactly_once(engine, mode):
    case = _first_slices("3DBox_Microscope_0004.npz", 12, 16)
    counting = CountingModel(engine)
    seg, stats = segment_case(case, counting, INT8, Options(mode_3d=mode, max_boxes=8, store_budget=8 << 20))
    touched = {z for b in case.boxes for z in range(b[2], b[5] + 1)}
    assert sorted(stats.encoded) == sorted(touched)             # each touched slice once
    assert len(counting.encoded) == len(touched) == stats.slices_encoded
    assert seg.shape == case.image.shape and seg.max() > 0


def test_propagation_spills_embeddings_and_gives_the_same_result(engine):
    case = _first_slices("3DBox_CT_0001.npz", 14, 7)
    ram, _ = segment_case(case, engine, INT8, Options(mode_3d="propagate", store_budget=1 << 30))
    spill, _ = segment_case(case, engine, INT8, Options(mode_3d="propagate", store_budget=0))
    np.testing.assert_array_equal(ram, spill)


def test_block_partition_gives_the_same_result(engine):
    case = load_case(SAMPLES / "inputs" / "2DBox_CT_0002.npz")
    ref, s1 = segment_case(case, engine, INT8, Options(max_boxes=100))
    for block in (1, 2, 3):
        seg, stats = segment_case(case, engine, INT8, Options(max_boxes=block))
        np.testing.assert_array_equal(seg, ref)
        assert stats.decoder_calls == -(-len(case.boxes) // block)
    assert s1.decoder_calls == 1


def _square_image(size=96):
    img = np.full((size, size, 3), 20, np.uint8)
    img[30:60, 25:70] = 220
    return img


def test_label_order_and_later_box_overwrites(engine):
    square, corner = [25, 30, 69, 59], [80, 80, 94, 94]
    # box 2 repeats box 1 exactly: the same logits, a tie everywhere, which the later box wins
    seg, _ = segment_case(Case("2DBox_Synth_0001.npz", _square_image(), np.array([square, square, corner])),
                          engine, INT8, Options(max_boxes=8))
    assert not (seg == 1).any() and (seg == 2).sum() > 300 and (seg == 3).any()
    assert (seg[30:60, 25:70] == 2).mean() > 0.5
    # label i belongs to box i, in input order: swapping the boxes swaps the labels
    swapped, _ = segment_case(Case("2DBox_Synth_0002.npz", _square_image(), np.array([corner, square])),
                              engine, INT8, Options(max_boxes=8))
    np.testing.assert_array_equal(swapped == 1, seg == 3)
    np.testing.assert_array_equal(swapped == 2, seg == 2)


def test_more_than_255_boxes_use_uint16(engine, tmp_path):
    rng = np.random.default_rng(0)
    xy = rng.integers(0, 90, (260, 2))
    boxes = np.concatenate([xy, xy + 5], axis=1)
    inputs = tmp_path / "in"
    inputs.mkdir()
    np.savez(inputs / "2DBox_Synth_0002.npz", imgs=_square_image(), boxes=boxes)
    assert main(["-i", str(inputs), "-o", str(tmp_path / "out"), "--cache", "none", "--max-boxes", "64"]) == 0
    segs = np.load(tmp_path / "out" / "2DBox_Synth_0002.npz")["segs"]
    assert segs.dtype == np.uint16 and segs.max() > 255


def test_bad_cases_are_reported_and_the_rest_still_run(tmp_path, capsys):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    good = SAMPLES / "inputs" / "2DBox_CT_0002.npz"
    (inputs / good.name).write_bytes(good.read_bytes())
    (inputs / "2DBox_Broken_0001.npz").write_bytes(b"garbage")
    np.savez(inputs / "2DBox_NoBoxes_0002.npz", imgs=np.zeros((10, 10, 3), np.uint8))
    np.savez(inputs / "3DBox_BadZ_0003.npz", imgs=np.zeros((4, 10, 10), np.uint8),
             boxes=np.array([[1, 1, 7, 5, 5, 9]]))
    np.savez(inputs / "2DBox_Empty_0004.npz", imgs=np.zeros((10, 12), np.uint8), boxes=np.zeros((0, 4)))
    code = main(["-i", str(inputs), "-o", str(out), "--cache", "none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert sorted(p.name for p in out.glob("*.npz")) == ["2DBox_CT_0002.npz", "2DBox_Empty_0004.npz"]
    assert not np.load(out / "2DBox_Empty_0004.npz")["segs"].any()
    assert np.load(out / "2DBox_Empty_0004.npz")["segs"].shape == (10, 12)
    assert len(err) == 6                       # one line per case, then the summary
    assert "qmedsam: 2DBox_Broken_0001.npz: unreadable" in err[0]
    assert "qmedsam: 2DBox_CT_0002.npz: ok, 5 boxes, 1 slice encoded, " in err[1]
    assert "qmedsam: 2DBox_Empty_0004.npz: ok, 0 boxes, 0 slices encoded, " in err[2]
    assert "qmedsam: 2DBox_NoBoxes_0002.npz: missing key(s) boxes" in err[3]
    assert err[4].startswith("qmedsam: 3DBox_BadZ_0003.npz:") and "z range" in err[4]
    assert err[5].startswith("qmedsam: 5 cases: 2 ok, 3 failed, ")
    # -q: only the errors and the summary
    assert main(["-i", str(inputs), "-o", str(out), "--cache", "none", "-q"]) == 1
    quiet = capsys.readouterr().err.strip().splitlines()
    assert quiet == [err[0], err[3], err[4], quiet[-1]] and quiet[-1].startswith("qmedsam: 5 cases: 2 ok, 3 failed")


def test_start_up_problems_stop_before_the_first_case_with_one_line(tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(SAMPLES / "inputs" / "2DBox_CT_0002.npz", inputs)
    shutil.copy(SAMPLES / "inputs" / "3DBox_CT_0001.npz", inputs)
    assert main(["-i", str(inputs), "-o", str(tmp_path / "out"), "--models", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "models not found in" in err[0] and str(tmp_path / "none") in err[0]
    assert not list((tmp_path / "out").glob("*"))                   # no case was tried
    assert main(["-i", str(tmp_path / "missing"), "-o", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"qmedsam: {tmp_path / 'missing'}: inputs folder not found"]
    with pytest.raises(SystemExit) as stop:                         # options: argparse, before anything runs
        main(["-i", str(inputs), "-o", str(tmp_path / "out"), "--max-boxes", "1O"])
    assert stop.value.code == 2 and "--max-boxes: '1O' is neither 'auto' nor a positive" in capsys.readouterr().err


def test_models_that_do_not_compile_stop_the_run_with_one_line(tmp_path, capsys):
    models = tmp_path / "models"
    models.mkdir()
    for f in ("encoder.bin", "decoder_image.xml", "decoder_image.bin", "decoder_boxes.xml", "decoder_boxes.bin"):
        shutil.copy(MODELS / f, models / f)
    (models / "encoder.xml").write_text("<net>not a model</net>")
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("2DBox_CT_0002.npz", "2DBox_Microscope_0003.npz"):
        shutil.copy(SAMPLES / "inputs" / name, inputs)
    assert main(["-i", str(inputs), "-o", str(tmp_path / "out"), "--models", str(models), "--cache", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot compile the models in" in err[0], err
    assert not list((tmp_path / "out").glob("*.npz"))


def test_models_are_found_by_option_environment_or_package_data(tmp_path, monkeypatch):
    from qmedsam.model.folder import MODEL_FILES, PACKAGE_MODELS, EngineError, check_folder, default_models
    from qmedsam.precision.setting import Precision

    def model_dir(base, precision):
        return Precision.resolve(precision, base).folder

    monkeypatch.delenv("QMEDSAM_MODELS", raising=False)
    assert default_models() == PACKAGE_MODELS and model_dir(default_models(), "int8") == PACKAGE_MODELS
    assert (PACKAGE_MODELS / "encoder.xml").read_bytes() == (MODELS / "encoder.xml").read_bytes()
    monkeypatch.setenv("QMEDSAM_MODELS", str(tmp_path))
    assert default_models() == tmp_path
    with pytest.raises(EngineError, match="missing encoder.xml, encoder.bin, decoder_image.xml, decoder_image.bin, "
                                          "decoder_boxes.xml, decoder_boxes.bin"):
        model_dir(tmp_path, "int8")
    with pytest.raises(EngineError, match="make export-fp32"):
        model_dir(tmp_path, "fp32")
    for f in MODEL_FILES:
        shutil.copy(MODELS / f, tmp_path / f)
    assert model_dir(tmp_path, "int8") == tmp_path


def test_auto_precision_runs_the_float_encoder_on_an_avx2_cpu_and_int8_where_it_pays(tmp_path, monkeypatch, capsys,
                                                                                      fp32_dir):
    """The CPU's flags decide (patched here: the choice, not this machine, is under test); the
    float encoder segments the real CT slice as the float model does, and a models folder
    exported before the float encoder existed still runs, on the int8 one.  A small 3D case sits
    beside the 2D one (a folder of 2D cases only loads the float encoder whatever the CPU)."""
    from qmedsam.precision.cpu import CpuFacts

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(SAMPLES / "inputs" / "2DBox_CT_0002.npz", inputs)
    volume = np.full((3, 64, 64), 30, np.uint8)
    volume[:, 20:40, 16:44] = 200
    np.savez(inputs / "3DBox_CT_9999.npz", imgs=volume, boxes=np.array([[14, 18, 0, 46, 42, 2]]),
             spacing=np.array([1.0, 1.0, 1.0]))
    segs, said = {}, {}
    older = tmp_path / "older-models"
    older.mkdir()
    for f in ("encoder", "decoder_image", "decoder_boxes"):
        for ext in ("xml", "bin"):
            shutil.copy(MODELS / f"{f}.{ext}", older)
    runs = {"avx2": ({"avx2", "fma"}, MODELS), "vnni": ({"avx2", "avx512f", "avx512_vnni"}, MODELS),
            "avx2, older folder": ({"avx2", "fma"}, older), "avx512 without vnni": ({"avx2", "avx512f"}, MODELS)}
    for name, (flags, models) in runs.items():
        monkeypatch.setattr(CpuFacts, "here", staticmethod(lambda flags=flags: CpuFacts(flags, "")))
        out = tmp_path / name
        assert main(["-i", str(inputs), "-o", str(out), "-v", "--models", str(models), "--cache", "none"]) == 0
        err = capsys.readouterr().err
        said[name] = next(line for line in err.splitlines() if "models ready" in line)
        said[name + ", case"] = next((line for line in err.splitlines() if "2DBox_CT_0002.npz: encoder" in line), "")
        segs[name] = np.load(out / "2DBox_CT_0002.npz")["segs"]
        with open(out / "efficiency.csv", newline="") as f:
            said[name + ", ledger"] = {r["case"]: r for r in csv.DictReader(f)}
    ledger = {name: said[name + ", ledger"] for name in runs}
    two_d, three_d = "2DBox_CT_0002.npz", "3DBox_CT_9999.npz"
    # where int8 does not pay (AVX2), both cases run the float encoder, and say why
    assert ledger["avx2"][three_d]["policy"] == "float" and "int8 does not pay" in ledger["avx2"][three_d]["reason"]
    # elsewhere a 2D case runs in float, and a 3-slice case is too short to pay for the guard's probe
    for name in ("vnni", "avx512 without vnni"):
        assert ledger[name][two_d]["policy"] == "float" and "2D image" in ledger[name][two_d]["reason"]
        assert ledger[name][three_d]["policy"] == "float" and "expected" in ledger[name][three_d]["reason"]
        assert "encoder_w7" not in ledger[name][three_d]["graph_loads"] + ledger[name][two_d]["graph_loads"]
    # a models folder without the float encoder runs its int8 one, unguarded
    assert "encoder int8: " in said["avx2, older folder"] and "has no encoder_float.xml" in said["avx2, older folder"]
    assert ledger["avx2, older folder"][two_d]["policy"] == "auto"
    assert [ledger[k][two_d]["precision"] for k in runs] == ["float", "float", "int8", "float"]
    base = tmp_path / "float-base"                      # --precision fp32 reads BASE/fp32
    base.mkdir()
    (base / "fp32").symlink_to(fp32_dir)
    assert main(["-i", str(inputs), "-o", str(tmp_path / "fp32"), "--models", str(base), "--precision", "fp32",
                 "--cache", "none"]) == 0
    fp32 = np.load(tmp_path / "fp32" / "2DBox_CT_0002.npz")["segs"]
    labels = range(1, int(fp32.max()) + 1)
    assert len(labels) > 3
    for name in ("avx2", "vnni"):
        agree = [dice(segs[name] == k, fp32 == k) for k in labels]
        assert np.mean(agree) > 0.97, (name, agree)   # the float model's masks (f16-stored weights: close, not equal)


def test_engine_binds_by_the_exported_names_and_refuses_others(tmp_path):
    import openvino as ov

    from qmedsam.model.folder import EngineError

    model = ov.Core().read_model(str(MODELS / "encoder.xml"))
    model.outputs[0].get_tensor().set_names({"features"})
    ov.save_model(model, str(tmp_path / "encoder.xml"), compress_to_fp16=False)
    for f in ("decoder_image.xml", "decoder_image.bin", "decoder_boxes.xml", "decoder_boxes.bin"):
        shutil.copy(MODELS / f, tmp_path)
    with pytest.raises(EngineError, match="encoder model has no output named image_embedding"):
        Model(tmp_path)


def test_engine_defaults_to_the_numerics_the_predictor_ships():
    from qmedsam.precision.cpu import CpuFacts
    from qmedsam.precision.setting import float_ops_for

    def cap(text):
        return CpuFacts({"avx512f", "avx512_vnni", "avx512_bf16"}, text)

    assert ModelSettings().float_ops == float_ops_for("int8", cpu=cap("")) == "auto"
    assert float_ops_for("fp32", cpu=cap("")) == "f32" and float_ops_for("fp32", "bf16", cap("")) == "bf16"
    # an ISA cap without bf16 (the organiser-like setting): auto follows it instead of emulating bf16
    assert float_ops_for("int8", cpu=cap("AVX512_CORE")) == float_ops_for("auto", cpu=cap("avx2")) == "f32"
    assert float_ops_for("int8", cpu=cap("AVX512_CORE_BF16")) == "auto"
    assert float_ops_for("int8", "bf16", cap("AVX512_CORE")) == "bf16"


def _run_predict_sh(inputs, out, *extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.run(["sh", str(ROOT / "predict.sh"), "-i", str(inputs), "-o", str(out), "-v", *extra],
                          capture_output=True, encoding="utf-8", errors="replace", env=env, timeout=600)


def test_compile_cache_is_reused_by_a_second_process(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    src = SAMPLES / "inputs" / "2DBox_CT_0002.npz"
    (inputs / src.name).write_bytes(src.read_bytes())
    first = _run_predict_sh(inputs, tmp_path / "out")
    assert first.returncode == 0, first.stderr
    assert "compiled;" in first.stderr
    cache = tmp_path / "out" / ".qmedsam-cache"
    blobs = sorted(p.name for p in cache.iterdir())
    assert blobs
    second = _run_predict_sh(inputs, tmp_path / "out")
    assert second.returncode == 0 and "from compile cache" in second.stderr, second.stderr
    assert sorted(p.name for p in cache.iterdir()) == blobs
    assert sorted(p.name for p in (tmp_path / "out").glob("*.npz")) == [src.name]


def test_unwritable_cache_warns_and_still_runs(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    src = SAMPLES / "inputs" / "2DBox_CT_0002.npz"
    (inputs / src.name).write_bytes(src.read_bytes())
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    run = _run_predict_sh(inputs, tmp_path / "out", "--cache", str(blocker / "cache"))
    assert run.returncode == 0 and "warning: compile cache" in run.stderr
    assert (tmp_path / "out" / src.name).exists()


def test_help_documents_every_option():
    text = subprocess.run([sys.executable, "-m", "qmedsam.predict", "--help"], capture_output=True,
                          encoding="utf-8", errors="replace", env=dict(os.environ, PYTHONPATH=str(ROOT / "src"))).stdout
    for opt in ("--models", "--cache", "--max-boxes", "--mode-3d", "--threads", "--overlay", "--precision"):
        assert opt in text


def test_runtime_needs_no_training_or_evaluation_package(tmp_path):
    """The predictor (with overlays) runs with every training/evaluation package made unimportable."""
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'scipy', 'brevitas', 'matplotlib', 'SimpleITK', 'tqdm',\n"
        "                                   'qmedsam_eval', 'training', 'tools', 'benchmarks'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n")
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(SAMPLES / "inputs" / "2DBox_CT_0002.npz", inputs)
    short = _first_slices("3DBox_CT_0001.npz", 8, 3)
    np.savez_compressed(inputs / short.name, imgs=short.image, boxes=short.boxes, spacing=short.spacing)
    env = dict(os.environ, PYTHONPATH=f"{block}{os.pathsep}{ROOT / 'src'}")
    proc = subprocess.run([sys.executable, "-m", "qmedsam.predict", "-i", str(inputs), "-o", str(tmp_path / "out"),
                           "--cache", "none", "--overlay", str(tmp_path / "png")], env=env, capture_output=True,
                          encoding="utf-8", errors="replace")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "out" / "3DBox_CT_0001.npz").is_file()
    png = (tmp_path / "png" / "2DBox_CT_0002.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000


def test_freed_scratch_memory_keeps_states_and_the_model_usable(engine):
    """After the release calls a decoder state already made stays valid, and every graph runs
    again afterwards with the same results."""
    case = load_case(SAMPLES / "inputs" / "2DBox_CT_0002.npz")
    from qmedsam.image.preprocess import boxes_to_model, image_to_tensor

    x, geo = image_to_tensor(case.image)
    boxes = boxes_to_model(case.boxes, geo)
    emb, _ = engine.encode(x, ENCODER.name)
    state = engine.prepare(emb)
    ref, _ = engine.decode(state, boxes)
    engine.release_prepare()
    engine.encode(np.zeros_like(x), ENCODER.name)                      # other work in between
    engine.release_encoder(ENCODER.name)
    np.testing.assert_array_equal(engine.decode(state, boxes)[0], ref)
    np.testing.assert_array_equal(engine.encode(x, ENCODER.name)[0], emb)
    np.testing.assert_array_equal(engine.decode(engine.prepare(emb), boxes)[0], ref)


def test_two_states_on_one_model_do_not_disturb_each_other(engine):
    """A decoder state belongs to its image: preparing another one leaves it as it was."""
    from qmedsam.image.preprocess import image_to_tensor

    boxes = np.array([[[10.0, 10.0, 120.0, 120.0]]], np.float32)
    ct = load_case(SAMPLES / "inputs" / "2DBox_CT_0002.npz").image
    cells = load_case(SAMPLES / "inputs" / "2DBox_Microscope_0003.npz").image
    first = engine.prepare(engine.encode(image_to_tensor(ct)[0], ENCODER.name)[0])
    ref, _ = engine.decode(first, boxes)
    second = engine.prepare(engine.encode(image_to_tensor(cells)[0], ENCODER.name)[0])
    other, _ = engine.decode(second, boxes)
    again, _ = engine.decode(first, boxes)
    np.testing.assert_array_equal(again, ref)
    assert not np.array_equal(other, ref)


def test_a_models_folder_of_another_contract_is_refused(tmp_path):
    """The manifest records the model contract; a folder exported for other graph or tensor names
    stops the run at start-up with one line instead of failing inside OpenVINO."""
    import json

    from qmedsam.model.folder import MODEL_FILES, EngineError, check_folder
    from qmedsam.model.spec import MANIFEST, binding, contract

    for f in MODEL_FILES:
        shutil.copy(MODELS / f, tmp_path / f)
    manifest = json.loads((MODELS / MANIFEST).read_text())
    assert binding(manifest["contract"]) == binding(contract())   # the committed models follow this runtime's
    for graph in manifest["contract"]["graphs"]:                  # texts for readers: no re-export needed
        graph["role"], graph["precision"] = "reworded", "?"
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    assert check_folder(tmp_path) == tmp_path
    for change in ("state", "tensor"):
        broken = json.loads(json.dumps(manifest))
        if change == "state":
            broken["contract"]["decoder_state"] = broken["contract"]["decoder_state"][:-1]
        else:
            broken["contract"]["graphs"][0]["outputs"] = ["embedding"]
        (tmp_path / MANIFEST).write_text(json.dumps(broken))
        with pytest.raises(EngineError, match="another model contract"):
            check_folder(tmp_path)
