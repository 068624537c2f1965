"""Model surgery: encoder groups name the same layers in QAT configs, PTQ and the shipped models."""
import json

import pytest

from conftest import manifest_float_layers
from training.model.surgery import ENCODER_GROUPS, group_of, layers_in_groups, quant_leaves
from training.qat.config import CONFIGS


@pytest.fixture(scope="module")
def qenc(weights):
    from training.model.lite_medsam import build_lite_medsam
    from training.qat.student import QAT_CONFIG

    return build_lite_medsam(weights, QAT_CONFIG).image_encoder


def test_every_encoder_leaf_has_a_group(qenc):
    assert {group_of(n) for n in quant_leaves(qenc)} <= {g for g, _ in ENCODER_GROUPS}


def test_qat_configs_keep_the_shipped_models_float_layers(qenc):
    # the shipped names carry equalization's wrapper (NAME.layer); the QAT student is not equalized
    shipped = [n.removesuffix(".layer") for n in manifest_float_layers()]
    for path in sorted(CONFIGS.glob("**/stage*.json")):
        groups = json.loads(path.read_text())["quant"]["float_groups"]
        assert sorted(layers_in_groups(qenc, groups)) == sorted(shipped), path


def test_unknown_group_is_refused(qenc):
    with pytest.raises(ValueError, match="unknown encoder group"):
        layers_in_groups(qenc, ["stage9.mlp"])
