"""`make train-all` then `make export CKPT=` on its checkpoint, through the Make targets, on tiny
data; the exported models run in the predictor."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, SAMPLES
from test_qat_data import write_tree
from training.qat.checkpoint import Structure, rebuild, structure_of

pytestmark = pytest.mark.slow


def _make(*args, timeout=1200):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    run = subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, env=env, capture_output=True,
                         encoding="utf-8", errors="replace", timeout=timeout)
    assert run.returncode == 0, f"make {' '.join(args)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return run


def _tiny_configs(folder):
    folder.mkdir()
    for stage in (1, 2, 3):
        cfg = json.loads((ROOT / "training" / "configs" / "cpu-demo" / f"stage{stage}.json").read_text())
        cfg.update(workers=0, batch_size=2)
        cfg["quant"]["calibration_batches"] = 1
        cfg["sampling"].update(val_samples_per_modality=1, val_fraction=0.34)
        (folder / f"stage{stage}.json").write_text(json.dumps(cfg))
    return folder


def _config_float_layers() -> list[str]:
    """The encoder layers the QAT configs' float groups name, as the student keeps them."""
    from training.model.lite_medsam import LiteMedSAM
    from training.model.surgery import layers_in_groups
    from training.qat.student import QAT_CONFIG

    cfg = json.loads((ROOT / "training" / "configs" / "cpu-demo" / "stage3.json").read_text())
    return layers_in_groups(LiteMedSAM(QAT_CONFIG).image_encoder, cfg["quant"]["float_groups"])


def test_train_all_checkpoints_export_and_run_in_the_predictor(tmp_path):
    tree = tmp_path / "tree"
    write_tree(tree, n2d=4, n3d=3)
    qat = tmp_path / "qat"
    _make("train-all", f"DATA={tree}", f"QAT_OUT={qat}", "EPOCHS=1", "SAMPLES=1",
          f"CONFIGS={_tiny_configs(tmp_path / 'configs')}")
    # every checkpoint the trainer writes says what it is made of, the resumable one too
    expected = Structure(float_layers=tuple(_config_float_layers()))
    assert expected.float_layers                   # the configs keep the recipe's float groups
    for path in sorted((qat / "stage3").glob("*.pt")):
        blob = torch.load(path, map_location="cpu", weights_only=False)
        assert structure_of(blob) == expected, path
    models = tmp_path / "models"
    _make("export", f"CKPT={qat / 'stage3' / 'last.pt'}", f"MODELS={models}")
    manifest = json.loads((models / "manifest.json").read_text())
    assert manifest["method"] == "qat" and manifest["structure"]["merged_batchnorms"]
    cases, out = tmp_path / "cases", tmp_path / "out"
    cases.mkdir()
    shutil.copy(SAMPLES / "inputs" / "2DBox_CT_0002.npz", cases)
    run = subprocess.run([sys.executable, "-m", "qmedsam.predict", "-i", str(cases), "-o", str(out),
                          "--models", str(models), "--precision", "int8"], cwd=ROOT, capture_output=True,
                         encoding="utf-8", errors="replace", timeout=300)
    assert run.returncode == 0, run.stderr
    segs = np.load(out / "2DBox_CT_0002.npz")["segs"]
    boxes = np.load(cases / "2DBox_CT_0002.npz")["boxes"]
    assert set(np.unique(segs)) - {0} <= set(range(1, len(boxes) + 1)) and segs.any()


def test_a_legacy_resumable_checkpoint_rebuilds(weights):
    """``last.pt`` files written before the structure was recorded hold only the state: the
    merged BatchNorms are read from its keys."""
    from training.qat.student import build_student

    model, _ = build_student(weights, [], stage=1)
    rebuilt, structure = rebuild({"model": model.state_dict(), "optimizer": {}})
    assert structure.merged_batchnorms and structure.weight_per_channel and not structure.equalized
    assert rebuilt.state_dict().keys() == model.state_dict().keys()
