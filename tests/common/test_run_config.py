"""Run settings: read from Flower's kebab-case run config; bad values fail before any round."""

from __future__ import annotations

import pytest

from fedvault.common.errors import ConfigError, PrivacyConfigError
from fedvault.common.run_config import RunSettings


def test_round_trip_through_flower_run_config():
    settings = RunSettings(num_server_rounds=4, dataset="breast_cancer", model="mlp")
    assert RunSettings.from_run_config(settings.to_run_config()) == settings


def test_unset_privacy_knobs_mean_none():
    dp = RunSettings(target_epsilon=3.0).dp
    assert dp.noise_multiplier is None and dp.target_delta is None and dp.target_epsilon == 3.0
    dp = RunSettings(target_epsilon=0.0, noise_multiplier=1.1).dp
    assert dp.noise_multiplier == 1.1 and dp.target_epsilon is None


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"Unknown run-config keys \['learning_rate'\]"):
        RunSettings.from_run_config({"learning_rate": 0.1})


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match="'batch-size' must be a int"):
        RunSettings.from_run_config({"batch-size": "64"})


@pytest.mark.parametrize(
    ("values", "error", "match"),
    [
        ({"num-server-rounds": 0}, ConfigError, "num-server-rounds"),
        ({"learning-rate": -1.0}, ConfigError, "learning-rate"),
        ({"grad-sample-mode": "magic"}, ConfigError, "grad-sample-mode"),
        ({"max-grad-norm": 0.0}, PrivacyConfigError, "max-grad-norm"),
        ({"target-epsilon": 0.0, "noise-multiplier": 0.0}, PrivacyConfigError, "exactly one"),
    ],
)
def test_invalid_values_fail_at_construction(values, error, match):
    with pytest.raises(error, match=match):
        RunSettings.from_run_config(values)


def test_model_io_for_bundled_and_custom_data():
    assert RunSettings(dataset="digits").model_io() == ((1, 8, 8), 10)
    custom = RunSettings(dataset="/data/site.csv", input_shape="12", num_classes=3)
    assert custom.model_io() == ((12,), 3)
    with pytest.raises(ConfigError, match="must give input-shape and num-classes"):
        RunSettings(dataset="/data/site.csv").model_io()
    with pytest.raises(ConfigError, match="comma-separated integers"):
        RunSettings(dataset="x.csv", input_shape="a,b", num_classes=2).model_io()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("run-name", "my run"),
        ("run-name", "x" * 129),
        ("model-name", "../etc"),
        ("init-from", "model:0"),
        ("init-from", "model:abc"),
    ],
)
def test_names_the_model_store_uses_are_checked_before_any_training(key, value):
    with pytest.raises(ConfigError, match=key):
        RunSettings.from_run_config({key: value})


def test_a_dataset_label_that_is_a_path_still_names_a_valid_model():
    custom = RunSettings(
        dataset="/data/patients v2.csv", input_shape="30", num_classes=2, model="mlp"
    )
    assert custom.stored_model_name == "data-patients-v2.csv-mlp"
    assert RunSettings(model_name="pv2").stored_model_name == "pv2"
