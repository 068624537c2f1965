"""Shared, expensive fixtures (built once per test session)."""
import json
from pathlib import Path

import pytest

from qmedsam_eval.metrics import dice  # noqa: F401 (the one Dice, for the tests)

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
MODELS = ROOT / "models"


@pytest.fixture(scope="session")
def weights():
    from tools.weights import ensure_weights

    return ensure_weights()


@pytest.fixture(scope="session")
def float_model(weights):
    from training.model.lite_medsam import build_lite_medsam

    return build_lite_medsam(weights)


@pytest.fixture(scope="session")
def ct_case():
    from tools.public_data import ct_chest

    return ct_chest()


def manifest_float_layers() -> list[str]:
    path = MODELS / "manifest.json"
    return json.loads(path.read_text()).get("float_layers", []) if path.exists() else []


@pytest.fixture(scope="session")
def quick_int8(weights, tmp_path_factory, ct_case):
    """The shipped recipe (``training.ptq_recipe.quantized_model``: BatchNorms merged,
    per-channel weights, activation equalization, calibration), on two real slices only and
    exported to a temporary folder: enough to test the export path; `make export` calibrates
    the committed artifacts properly."""
    from qmedsam_eval.label_boxes import boxes_from_labels, relabel_consecutive
    from training.graph_export import export_quant
    from training.model.lite_medsam import build_lite_medsam
    from training.ptq import model_inputs, calibrate_decoder, decoder_calibration_batches
    from training.ptq_recipe import quantized_model

    fmodel = build_lite_medsam(weights)
    zs = (12, 20)
    model = quantized_model(weights, model_inputs([("ct", ct_case.image[z]) for z in zs]))
    pairs = [(ct_case.image[z], boxes_from_labels(relabel_consecutive(ct_case.labels[z]))) for z in zs]
    calibrate_decoder(model.decoder(), decoder_calibration_batches(fmodel, pairs))
    out = tmp_path_factory.mktemp("int8")
    export_quant(model, out)
    return model, out


@pytest.fixture(scope="session")
def fp32_dir(float_model, tmp_path_factory):
    """Float IR: the repo's models/fp32 when exported, else a fresh export."""
    from qmedsam.model.spec import DECODER_PLAIN, REQUIRED
    from training.graph_export import path_of

    if all(path_of(MODELS / "fp32", g).exists() for g in (*REQUIRED, DECODER_PLAIN)):
        return MODELS / "fp32"
    from training.graph_export import export_float

    out = tmp_path_factory.mktemp("fp32")
    export_float(float_model, out)
    return out


class CountingModel:
    """The real model, recording which images (by content) it encodes."""

    def __init__(self, real):
        self.real = real
        self.encoded = []

    def start_encode(self, tensor, graph):
        self.encoded.append(tensor.tobytes().__hash__())
        return self.real.start_encode(tensor, graph)

    def encode(self, tensor, graph):
        encoding = self.start_encode(tensor, graph)
        return self.real.finish_encode(encoding), encoding.seconds

    def __getattr__(self, name):
        return getattr(self.real, name)


class StandIn:
    """A stand-in model with the real one's calls (encode, prepare, decode, release): a subclass says
    what an encoder pass gives (:meth:`embed`) and what boxes decode to against an embedding
    (:meth:`masks`).  Records the encoder graphs it ran and the ones it was told to release."""

    def __init__(self):
        self.encoded: list[str] = []
        self.released: list[str] = []

    def embed(self, tensor, graph: str):
        import numpy as np

        return np.zeros((1, 256, 64, 64), np.float32)

    def masks(self, embedding, boxes):
        raise NotImplementedError

    def has_encoder(self, name: str) -> bool:
        return True

    def start_encode(self, tensor, graph: str):
        from qmedsam.model.model import Encoding

        self.encoded.append(graph)
        encoding = Encoding(graph, None)
        encoding.embedding = self.embed(tensor, graph)
        return encoding

    def finish_encode(self, encoding):
        return encoding.embedding

    def encode(self, tensor, graph: str):
        return self.finish_encode(self.start_encode(tensor, graph)), 0.0

    def prepare(self, embedding, state=None):
        return {"embedding": embedding}

    def decode(self, state, boxes):
        return self.masks(state["embedding"], boxes)

    def release_encoder(self, name: str) -> None:
        self.released.append(name)

    def release_prepare(self) -> None:
        pass


def write_short_cases(folder: Path) -> list[str]:
    """A small folder shaped like real case sets: the two 2D samples and short 3D cases (one box
    over 4-6 slices of the sample CT and nuclei volumes).  Returns the case names."""
    import shutil

    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("2DBox_CT_0002.npz", "2DBox_Microscope_0003.npz"):
        shutil.copy(SAMPLES / "inputs" / name, folder)
    ct = np.load(SAMPLES / "inputs" / "3DBox_CT_0001.npz")
    nuclei = np.load(SAMPLES / "inputs" / "3DBox_Microscope_0004.npz")
    short = {"3DBox_CT_1005.npz": (ct, [56, 59, 5, 77, 94, 9]), "3DBox_CT_1012.npz": (ct, [54, 74, 12, 78, 101, 17]),
             "3DBox_CT_1020.npz": (ct, [13, 25, 20, 121, 100, 23]), "3DBox_Microscope_1000.npz": (nuclei, [29, 31, 0, 49, 52, 5])}
    for name, (src, box) in short.items():
        np.savez_compressed(folder / name, imgs=src["imgs"], boxes=np.array([box]), spacing=src["spacing"])
    return sorted(p.name for p in folder.glob("*.npz"))
