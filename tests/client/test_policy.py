"""The site policy file: safe documented defaults, and an invalid file names its field."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from fedvault.client.policy import SitePolicy, default_policy_text
from fedvault.common.errors import ConfigError, PolicyRefused
from fedvault.common.run_config import RunSettings

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site-policy.toml"
    path.write_text(text)
    return path


def test_shipped_default_is_the_documented_one_and_is_safe(tmp_path: Path) -> None:
    assert default_policy_text() == (REPO / "policies" / "site-policy.toml").read_text()
    policy = SitePolicy.load(_write(tmp_path, default_policy_text()))
    assert policy == SitePolicy()
    assert policy.allow_export is False
    assert policy.max_run_epsilon <= policy.max_total_epsilon


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[privacy]\nmax-total-epsilon = -1\n", "[privacy] max-total-epsilon"),
        ("[privacy]\nmax-total-epsilon = 'ten'\n", "[privacy] max-total-epsilon"),
        ("[privacy]\nmax-total-epsilon = 2.0\nmax-run-epsilon = 3.0\n", "max-run-epsilon"),
        ("[privacy]\nmax-delta = 1.5\n", "[privacy] max-delta"),
        ("[privacy]\nmin-noise-multiplier = -0.1\n", "min-noise-multiplier"),
        ("[runs]\nmax-rounds-per-run = 0\n", "[runs] max-rounds-per-run"),
        ("[runs]\nmax-rounds-per-run = 2.5\n", "[runs] max-rounds-per-run"),
        ("[runs]\nallowed-models = ['resnet']\n", "[runs] allowed-models"),
        ("[runs]\nallowed-models = 'cnn'\n", "[runs] allowed-models"),
        ("[runs]\nallowed-projects = []\n", "[runs] allowed-projects"),
        ("[models]\nallow-export = 'yes'\n", "[models] allow-export"),
        ("[privacy]\nmax-epsilon = 3\n", "max-epsilon"),
        ("[budget]\nx = 1\n", "[budget]"),
        ("[privacy\n", "not valid TOML"),
    ],
)
def test_invalid_policy_names_the_field(tmp_path: Path, text: str, names: str) -> None:
    with pytest.raises(ConfigError) as info:
        SitePolicy.load(_write(tmp_path, text))
    assert names in str(info.value)


def test_missing_policy_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fedvault site init"):
        SitePolicy.load(tmp_path / "nope.toml")


def test_policy_refuses_runs_it_does_not_allow() -> None:
    policy = SitePolicy(
        allowed_models=("mlp",),
        allowed_projects=("oncology",),
        max_rounds_per_run=3,
        min_noise_multiplier=0.8,
        max_delta=1e-4,
    )
    run = RunSettings(model="mlp", dataset="breast_cancer", project="oncology")
    policy.check_run(run, server_round=3)
    with pytest.raises(PolicyRefused, match="allows models"):
        policy.check_run(replace(run, model="cnn", dataset="digits"), server_round=1)
    with pytest.raises(PolicyRefused, match="project 'marketing'"):
        policy.check_run(replace(run, project="marketing"), server_round=1)
    with pytest.raises(PolicyRefused, match="round 4 exceeds"):
        policy.check_run(run, server_round=4)
    policy.check_round(noise_multiplier=0.8, delta=1e-4)
    with pytest.raises(PolicyRefused, match="below this site's minimum"):
        policy.check_round(noise_multiplier=0.5, delta=1e-5)
    with pytest.raises(PolicyRefused, match="delta"):
        policy.check_round(noise_multiplier=1.0, delta=1e-3)
