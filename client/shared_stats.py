"""A site's share of the run's feature statistics: one noisy sum, charged as a DP release."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from fedvault.client.local_round import round_seed
from fedvault.client.run_privacy import RunPrivacy
from fedvault.client.site_data import SiteData
from fedvault.common.errors import PolicyRefused
from fedvault.common.feature_stats import feature_stats_step, noisy_feature_sum
from fedvault.common.privacy import epsilon_spent
from fedvault.common.run_config import RunSettings

__all__ = ["FeatureRelease", "release_feature_sum"]

log = logging.getLogger("fedvault.client")


@dataclass(frozen=True)
class FeatureRelease:
    """What the site sends: its noisy feature sum, its example count, the run's epsilon."""

    feature_sum: np.ndarray
    num_examples: int
    epsilon: float
    delta: float


def release_feature_sum(
    *,
    settings: RunSettings,
    data: SiteData,
    privacy: RunPrivacy,
    partition: int = 0,
    secret: bytes | None = None,
) -> FeatureRelease:
    """Release the site's clipped feature sum through the Gaussian mechanism, once per run.

    The release is appended to ``privacy`` (a step at sample rate 1), so every later
    calibration and epsilon composes it. ``secret`` keys the noise as for DP-SGD rounds.

    Raises:
        PolicyRefused: the run has no shared statistics, or already released or trained.
        PrivacyConfigError: bad statistics parameters.
    """
    if not settings.shared_stats:
        raise PolicyRefused("this run does not use shared feature statistics")
    if privacy.history:
        raise PolicyRefused(
            "shared feature statistics are released once per run, before any training; "
            "this run already has privacy spend recorded at this site"
        )
    seed = round_seed(settings.seed, server_round=0, partition=partition, secret=secret)
    total = noisy_feature_sum(
        data.features,
        clip_norm=settings.feature_stats_clip,
        noise_multiplier=settings.feature_stats_noise,
        rng=np.random.default_rng(seed),
    )
    n = len(data.train)
    delta = settings.dp.delta_for(n)
    privacy.history.append(feature_stats_step(settings.feature_stats_noise))
    epsilon = epsilon_spent(privacy.history, delta=delta, accountant=settings.dp.accountant)
    log.info("Released feature sums at %s: epsilon %.3f (delta %.1e)", data.name, epsilon, delta)
    return FeatureRelease(feature_sum=total, num_examples=n, epsilon=epsilon, delta=delta)
