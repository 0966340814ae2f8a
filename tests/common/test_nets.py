"""Model zoo: every registered model builds, runs, and is accepted by Opacus."""

from __future__ import annotations

import pytest
import torch
from opacus.validators import ModuleValidator

from fedvault.common.errors import ConfigError
from fedvault.common.nets import MODELS, build_model


@pytest.mark.parametrize(
    ("name", "shape", "classes"),
    [("mlp", (30,), 2), ("cnn", (1, 8, 8), 10), ("cnn", (3, 32, 32), 10), ("mlp", (1, 8, 8), 10)],
)
def test_models_build_and_predict_one_score_per_class(name, shape, classes):
    model = build_model(name, input_shape=shape, num_classes=classes)
    out = model(torch.randn(5, *shape))
    assert out.shape == (5, classes)
    assert ModuleValidator.is_valid(model)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_unknown_model_names_the_choices():
    with pytest.raises(ConfigError, match="choose one of"):
        build_model("resnet", input_shape=(30,), num_classes=2)


def test_cnn_refuses_tabular_shape_with_a_hint():
    with pytest.raises(ConfigError, match="Use model 'mlp'"):
        build_model("cnn", input_shape=(30,), num_classes=2)


def test_one_class_is_refused():
    with pytest.raises(ConfigError, match="at least 2 classes"):
        build_model("mlp", input_shape=(4,), num_classes=1)


def test_registry_lists_both_models():
    assert {"mlp", "cnn"} <= set(MODELS)
