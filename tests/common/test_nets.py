"""Model zoo: every registered model builds, runs, and is accepted by Opacus."""

from __future__ import annotations

import pytest
import torch
from opacus.validators import ModuleValidator
from torch.utils.data import TensorDataset

from fedvault.client.training import train_local
from fedvault.common.data import Standardizer, load_dataset
from fedvault.common.errors import ConfigError
from fedvault.common.nets import MODELS, build_model


@pytest.mark.parametrize(
    ("name", "shape", "classes"),
    [
        ("mlp", (30,), 2),
        ("cnn", (1, 8, 8), 10),
        ("cnn", (3, 32, 32), 10),
        ("mlp", (1, 8, 8), 10),
        ("linear", (30,), 2),
        ("linear", (1, 8, 8), 10),
    ],
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


def test_registry_lists_the_models():
    assert {"mlp", "cnn", "linear"} <= set(MODELS)
    assert all(spec.description for spec in MODELS.values())


def test_linear_is_one_layer_of_logistic_regression():
    model = build_model("linear", input_shape=(1, 8, 8), num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == 64 * 10 + 10
    assert [type(m) for m in model.modules() if not list(m.children())] == [
        torch.nn.Flatten,
        torch.nn.Linear,
    ]


@pytest.mark.parametrize("shape", [(), (0,), (1, 0, 8), (-3,)])
def test_linear_refuses_shapes_without_features(shape):
    with pytest.raises(ConfigError, match="Model 'linear' needs examples"):
        build_model("linear", input_shape=shape, num_classes=2)


@pytest.mark.parametrize("mode", ["fused", "hooks"])
def test_linear_trains_with_dp_sgd_on_breast_cancer(mode):
    ds = load_dataset("breast_cancer")
    x = torch.from_numpy(Standardizer.fit(ds.x).transform(ds.x))
    y = torch.from_numpy(ds.y)
    torch.manual_seed(0)
    model = build_model("linear", input_shape=(30,), num_classes=2)
    result = train_local(
        model=model,
        data=TensorDataset(x, y),
        epochs=3,
        batch_size=64,
        learning_rate=0.5,
        momentum=0.0,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(1),
        grad_sample_mode=mode,
    )
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.9  # the majority class is 63%
    assert result.steps == 3 * 9 and result.sample_rate == pytest.approx(1 / 9)
