"""DP settings are checked up front; epsilon is the composition of every recorded step."""

from __future__ import annotations

import pytest

from fedvault.common.errors import PrivacyConfigError
from fedvault.common.privacy import (
    DPConfig,
    PrivacyStep,
    default_delta,
    epsilon_spent,
    noise_for_target,
)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_grad_norm": 0.0, "noise_multiplier": 1.0}, "max-grad-norm must be a positive"),
        ({"max_grad_norm": float("nan"), "noise_multiplier": 1.0}, "max-grad-norm"),
        ({"max_grad_norm": 1.0}, "exactly one of noise-multiplier and target-epsilon"),
        ({"max_grad_norm": 1.0, "noise_multiplier": 1.0, "target_epsilon": 3.0}, "exactly one"),
        ({"max_grad_norm": 1.0, "noise_multiplier": -0.5}, "no privacy at all"),
        ({"max_grad_norm": 1.0, "target_epsilon": float("inf")}, "target-epsilon"),
        ({"max_grad_norm": 1.0, "noise_multiplier": 1.0, "target_delta": 1.5}, "target-delta"),
        ({"max_grad_norm": 1.0, "noise_multiplier": 1.0, "accountant": "gdp"}, "accountant"),
    ],
)
def test_bad_dp_settings_are_refused_before_training(kwargs, match):
    with pytest.raises(PrivacyConfigError, match=match):
        DPConfig(**kwargs)


def test_default_delta_is_below_one_over_n():
    for n in (10, 383, 1000, 123_456):
        d = default_delta(n)
        assert 0 < d <= 1 / (10 * n)
        assert d > 1 / (100 * n)  # not absurdly small either


def test_delta_at_or_above_one_over_n_is_refused():
    dp = DPConfig(max_grad_norm=1.0, noise_multiplier=1.0, target_delta=1e-3)
    with pytest.raises(PrivacyConfigError, match="not below 1/n"):
        dp.delta_for(1000)
    assert dp.delta_for(500) == 1e-3


def test_epsilon_grows_with_every_round_and_is_order_independent():
    step = PrivacyStep(noise_multiplier=1.0, sample_rate=0.05, steps=20)
    eps = [epsilon_spent([step] * r, delta=1e-5, accountant="rdp") for r in (1, 2, 3)]
    assert eps[0] < eps[1] < eps[2]
    merged = epsilon_spent([PrivacyStep(1.0, 0.05, 60)], delta=1e-5, accountant="rdp")
    assert merged == pytest.approx(eps[2], rel=1e-9)


def test_no_steps_no_spend():
    assert epsilon_spent([], delta=1e-5) == 0.0


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_calibrated_noise_meets_but_does_not_exceed_target(accountant):
    sigma = noise_for_target(
        target_epsilon=3.0, delta=1e-5, sample_rate=0.05, steps=100, accountant=accountant
    )
    spent = epsilon_spent([PrivacyStep(sigma, 0.05, 100)], delta=1e-5, accountant=accountant)
    assert 2.9 <= spent <= 3.0


def test_impossible_target_explains_what_to_change():
    with pytest.raises(PrivacyConfigError, match="Raise target-epsilon"):
        noise_for_target(target_epsilon=1e-9, delta=1e-5, sample_rate=1.0, steps=10_000)
