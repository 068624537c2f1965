"""The successors' cases through the command line as the organisers run them: a fresh process per
case or round, the outputs folder kept; hostile files refused while the others still run."""
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks.prompt_cases import next_click, object_array, recist_from_labels, round1_boxes
from conftest import ROOT, SAMPLES
from tests.runtime.test_successor_cases import RunsCode

ENV = dict(os.environ, PYTHONPATH=f"{ROOT / 'src'}:{ROOT}")


@pytest.fixture(scope="module")
def short_ct():
    image = np.load(SAMPLES / "inputs" / "3DBox_CT_0001.npz")
    gts = np.load(SAMPLES / "gts" / "3DBox_CT_0001.npz")
    return image["imgs"][8:16], gts["gts"][8:16], image["spacing"]


def predict(inputs, outputs, *extra):
    return subprocess.run([sys.executable, "-m", "qmedsam.predict", "-i", str(inputs), "-o", str(outputs), *extra],
                          env=ENV, capture_output=True, text=True)


def test_bad_and_hostile_files_fail_alone_in_one_line(short_ct, tmp_path):
    image, labels, spacing = short_ct
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    marker = tmp_path / "ran"
    hostile = np.empty(1, object)
    hostile[0] = RunsCode(marker)
    np.savez(inputs / "CT_Evil_0001.npz", imgs=image, clicks=hostile)
    two_slices = np.zeros(image.shape, np.uint8)
    two_slices[2:4, 40, 40:60] = 1
    np.savez(inputs / "CT_TwoSlices_0001.npz", imgs=image, recist=two_slices)
    np.savez(inputs / "CT_Empty_0001.npz", imgs=image, recist=np.zeros(image.shape, np.uint8))
    np.savez(inputs / "CT_Outside_0001.npz", imgs=image, boxes=object_array(round1_boxes(labels)),
             clicks=object_array([{"fg": [[2, 40, 900]], "bg": []}]), clicks_order=object_array([["fg"]]),
             prev_pred=labels)
    np.savez(inputs / "CT_WrongPrev_0001.npz", imgs=image, boxes=object_array(round1_boxes(labels)),
             clicks=object_array([{"fg": [], "bg": []}]), prev_pred=labels[:, :10])
    np.savez(inputs / "CT_Lesion_0001.npz", imgs=image, spacing=spacing, recist=recist_from_labels(labels))
    done = predict(inputs, outputs)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if "Lesion" not in line and ".npz:" in line]
    assert len(errors) == 5 and all(line.count(".npz") == 1 for line in errors), done.stderr
    for name, reason in (("Evil", "refused"), ("TwoSlices", "drawn on 2 slices"), ("Empty", "recist is empty"),
                         ("Outside", "outside the volume"), ("WrongPrev", "prev_pred has shape")):
        assert any(name in line and reason in line for line in errors), (name, done.stderr)
        assert not (outputs / f"CT_{name}_0001.npz").exists()
    assert not marker.exists()
    segs = np.load(outputs / "CT_Lesion_0001.npz")["segs"]
    assert segs.dtype == np.uint8 and set(np.unique(segs)) - {0} <= set(np.unique(labels)) - {0}
    assert not [p for p in outputs.iterdir() if p.name.startswith(".") and p.suffix == ".part"]


def test_click_rounds_take_their_slices_from_the_first_rounds_cache(short_ct, tmp_path):
    image, labels, spacing = short_ct
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    boxes = object_array(round1_boxes(labels))
    name = "CT_Inter_0001.npz"
    np.savez(inputs / name, imgs=image, spacing=spacing, boxes=boxes)
    first = predict(inputs, outputs, "-v")
    assert first.returncode == 0, first.stderr
    cache = outputs / ".qmedsam-cache" / "embeddings"
    assert len(list(cache.glob("*.npy"))) == image.shape[0]          # every slice, once
    prev = np.load(outputs / name)["segs"]
    clicks = [{"fg": [], "bg": []} for _ in range(int(labels.max()))]
    order = [[] for _ in clicks]
    for k in range(len(clicks)):
        c = next_click(labels, prev, k + 1)
        if c:
            clicks[k][c[0]].append(list(c[1]))
            order[k].append(c[0])
    np.savez(inputs / name, imgs=image, spacing=spacing, boxes=boxes, clicks=object_array(clicks),
             clicks_order=object_array(order), prev_pred=prev)
    second = predict(inputs, outputs, "-v")
    assert second.returncode == 0, second.stderr
    assert "0 slices encoded" in second.stderr and "from the embeddings cache" in second.stderr, second.stderr
    assert "clicks: class 1" in second.stderr
    after = np.load(outputs / name)["segs"]
    touched = {int(c[1][0]) for c in (next_click(labels, prev, k + 1) for k in range(len(clicks))) if c}
    untouched = [z for z in range(image.shape[0]) if all(abs(z - t) > 0 for t in touched)]
    assert after.dtype == np.uint8 and after.shape == prev.shape
    changed = [z for z in range(image.shape[0]) if not np.array_equal(after[z], prev[z])]
    assert changed and set(changed) <= set(range(image.shape[0]))
    assert any(np.array_equal(after[z], prev[z]) for z in untouched)


def test_the_embeddings_cache_stays_within_its_bound(tmp_path):
    from qmedsam.segment.embedding_cache import EmbeddingCache

    cache = EmbeddingCache(tmp_path, "models", limit=3 * 4 * 256 * 64 * 64 + 1000)
    emb = np.ones((1, 256, 64, 64), np.float32)
    for i in range(5):
        cache.put(np.full((8, 8), i, np.uint8), emb * i)
        os.utime(next(p for p in tmp_path.glob("*.npy") if np.load(p)[0, 0, 0, 0] == i), (i, i))
    cache.trim()
    kept = sorted(int(np.load(p)[0, 0, 0, 0]) for p in tmp_path.glob("*.npy"))
    assert kept == [2, 3, 4]
    assert cache.get(np.full((8, 8), 4, np.uint8))[0, 0, 0, 0] == 4 and cache.get(np.full((8, 8), 0, np.uint8)) is None
    assert not list(tmp_path.glob(".*"))                      # nothing half-written left
