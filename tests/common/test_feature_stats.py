"""Shared feature statistics: data-independent transform, clipped noisy sums, calibration."""

from __future__ import annotations

import numpy as np
import pytest

from fedvault.common.errors import ConfigError, DataError, PrivacyConfigError
from fedvault.common.feature_stats import (
    combine_feature_sums,
    feature_stats_step,
    noisy_feature_sum,
    transform_features,
)
from fedvault.common.privacy import PrivacyStep, epsilon_spent, noise_for_target
from fedvault.common.run_config import RunSettings


def test_log_transform_is_monotone_and_defined_for_every_real() -> None:
    x = np.array([[-50.0, -1.0, -1e-4, 0.0, 1e-4, 1.0, 50.0]], dtype=np.float32)
    t = transform_features(x, "log")
    assert np.isfinite(t).all()
    assert (np.diff(t[0]) > 0).all()
    assert t[0, 5] == pytest.approx(np.log(1.001), rel=1e-5)


def test_unknown_transform_is_a_clear_error() -> None:
    with pytest.raises(PrivacyConfigError, match="feature-transform must be one of"):
        transform_features(np.zeros((1, 2)), "sqrt")


def test_one_record_moves_the_sum_by_at_most_the_clip_norm() -> None:
    """The Gaussian mechanism's sensitivity is what the accountant assumes."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(20, 5))
    outlier = np.vstack([base, np.full((1, 5), 1e6)])
    kwargs = {"clip_norm": 2.0, "noise_multiplier": 1e-12}
    without = noisy_feature_sum(base, rng=np.random.default_rng(1), **kwargs)
    with_it = noisy_feature_sum(outlier, rng=np.random.default_rng(1), **kwargs)
    assert np.linalg.norm(with_it - without) == pytest.approx(2.0, rel=1e-6)


def test_noise_has_the_calibrated_scale() -> None:
    x = np.zeros((10, 4000))
    total = noisy_feature_sum(x, clip_norm=3.0, noise_multiplier=2.0, rng=np.random.default_rng(2))
    assert total.std() == pytest.approx(6.0, rel=0.05)


@pytest.mark.parametrize(
    ("noise", "clip", "message"),
    [(0.0, 1.0, "feature-stats-noise"), (1.0, -1.0, "feature-stats-clip"), (np.inf, 1, "noise")],
)
def test_bad_release_parameters_are_refused(noise: float, clip: float, message: str) -> None:
    with pytest.raises(PrivacyConfigError, match=message):
        noisy_feature_sum(np.ones((3, 2)), clip_norm=clip, noise_multiplier=noise, rng=None)  # type: ignore[arg-type]


def test_combined_centre_is_the_total_over_the_counts() -> None:
    scaling = combine_feature_sums(
        [np.array([2.0, 4.0]), np.array([4.0, 2.0])], [2, 4], transform="none"
    )
    assert np.allclose(scaling.center, [1.0, 1.0])
    assert np.allclose(scaling.apply(np.array([[1.0, 3.0]])), [[0.0, 2.0]])


def test_mismatched_site_sums_are_refused() -> None:
    with pytest.raises(DataError, match="different sizes"):
        combine_feature_sums([np.zeros(2), np.zeros(3)], [1, 1], transform="none")
    with pytest.raises(DataError, match="features"):
        combine_feature_sums([np.zeros(2)], [1], transform="none").apply(np.zeros((1, 3)))


def test_noise_calibrated_after_a_release_keeps_the_whole_run_on_target() -> None:
    prior = [feature_stats_step(3.0)]
    kwargs = {"target_epsilon": 3.0, "delta": 1e-3, "sample_rate": 0.25, "steps": 200}
    noise = noise_for_target(accountant="rdp", prior=prior, **kwargs)
    total = epsilon_spent([*prior, PrivacyStep(noise, 0.25, 200)], delta=1e-3, accountant="rdp")
    assert 2.97 <= total <= 3.0
    # The release leaves less budget for DP-SGD: more noise than without it.
    assert noise > noise_for_target(accountant="rdp", **kwargs)


def test_a_release_that_spends_the_whole_target_leaves_nothing_to_calibrate() -> None:
    with pytest.raises(PrivacyConfigError, match="nothing is left for DP-SGD"):
        noise_for_target(
            target_epsilon=1.0,
            delta=1e-3,
            sample_rate=0.5,
            steps=10,
            accountant="rdp",
            prior=[feature_stats_step(0.5)],
        )


def test_run_config_checks_the_statistics_settings_up_front() -> None:
    with pytest.raises(ConfigError, match="feature-stats-clip"):
        RunSettings(feature_stats_noise=3.0)
    with pytest.raises(ConfigError, match="feature-transform"):
        RunSettings(feature_transform="sqrt")
    with pytest.raises(ConfigError, match="feature-stats-noise must be >= 0"):
        RunSettings(feature_stats_noise=-1.0, feature_stats_clip=1.0)
    on = RunSettings.from_run_config(
        {"feature-transform": "log", "feature-stats-noise": 3, "feature-stats-clip": 20}
    )
    assert on.shared_stats and not RunSettings().shared_stats
