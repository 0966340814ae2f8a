"""A round under the site's own rules: policy first, ledger reservation, train, commit."""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fedvault.client.ledger import LEDGER_FILE, PrivacyLedger
from fedvault.client.local_round import RoundOutcome, round_noise, train_round
from fedvault.client.policy import POLICY_FILE, SitePolicy
from fedvault.client.run_privacy import RunPrivacy
from fedvault.client.shared_stats import FeatureRelease, release_feature_sum
from fedvault.client.site_data import SiteData
from fedvault.client.training import steps_per_epoch
from fedvault.common.errors import ConfigError, FedvaultError, KeyMaterialError, PolicyRefused
from fedvault.common.feature_stats import feature_stats_step
from fedvault.common.files import create_private, read_private
from fedvault.common.privacy import PrivacyStep
from fedvault.common.run_config import RunSettings

__all__ = ["Site", "guarded_release", "guarded_round", "open_site", "site_secret"]

log = logging.getLogger("fedvault.client")


NOISE_KEY_FILE = "noise.key"


@dataclass(frozen=True)
class Site:
    """A site directory's policy, privacy ledger and randomness key."""

    directory: Path
    policy: SitePolicy
    ledger: PrivacyLedger
    secret: bytes


def site_secret(directory: Path) -> bytes:
    """The site's key for sampling and noise randomness (created 0600 on first use)."""
    path = directory / NOISE_KEY_FILE
    if not path.exists():
        with contextlib.suppress(KeyMaterialError):  # another process made it first: use that
            create_private(path, secrets.token_bytes(32), what="A noise key")
    secret = read_private(path, what="noise key", create_hint="`fedvault site init` makes one.")
    if len(secret) != 32:
        raise ConfigError(f"{path} must hold 32 random bytes; delete it to make a new one.")
    return secret


def open_site(node_config: Mapping[str, Any]) -> Site | None:
    """The site named by the node config's ``site-dir``, or None when there is none."""
    directory = str(node_config.get("site-dir", "") or "")
    if not directory:
        return None
    path = Path(directory)
    return Site(
        directory=path,
        policy=SitePolicy.load(path / POLICY_FILE),
        ledger=PrivacyLedger(path / LEDGER_FILE),
        secret=site_secret(path),
    )


def guarded_round(
    site: Site,
    *,
    settings: RunSettings,
    data: SiteData,
    run_id: str,
    server_round: int,
    global_weights: Mapping[str, torch.Tensor],
    device: torch.device,
    partition: int = 0,
) -> RoundOutcome:
    """Train one round only if the site's policy and budget allow it.

    The round's exact privacy cost is known before training (noise, sample rate, steps),
    so it is reserved in the ledger first and marked spent before the update is returned.

    Raises:
        PolicyRefused: the policy refuses the run or its DP parameters.
        PrivacyBudgetExceeded: the round would pass a per-run or per-dataset limit.
    """
    policy, ledger, dataset = site.policy, site.ledger, data.dataset_id
    policy.check_run(settings, server_round=server_round)
    n = len(data.train)
    delta = settings.dp.delta_for(n)
    privacy = RunPrivacy(ledger.run_noise(dataset, run_id), ledger.history(dataset, run_id))
    # Rounds are counted from the ledger, not from the round number the server sends.
    policy.check_run(settings, server_round=ledger.trained_rounds(dataset, run_id) + 1)
    noise = round_noise(settings, privacy, num_examples=n, delta=delta)
    policy.check_round(noise_multiplier=noise, delta=delta)
    per_epoch = steps_per_epoch(n, settings.batch_size)
    planned = PrivacyStep(noise, 1.0 / per_epoch, settings.local_epochs * per_epoch)
    reservation = ledger.reserve(
        dataset=dataset,
        run_id=run_id,
        server_round=server_round,
        step=planned,
        delta=delta,
        accountant=settings.dp.accountant,
        max_run_epsilon=policy.max_run_epsilon,
        max_total_epsilon=policy.max_total_epsilon,
        budget_delta=policy.max_delta,
    )
    try:
        outcome = train_round(
            settings=settings,
            data=data,
            global_weights=global_weights,
            server_round=server_round,
            privacy=privacy,
            device=device,
            partition=partition,
            secret=site.secret,
        )
    except BaseException:
        ledger.release(reservation)  # nothing left the site
        raise
    taken = privacy.history[-1]
    if (taken.noise_multiplier, taken.steps) != (planned.noise_multiplier, planned.steps) or abs(
        taken.sample_rate - planned.sample_rate
    ) > 1e-12:
        # The reservation stays (counted as spent); the update is withheld.
        raise FedvaultError(
            f"Round {server_round} trained with {taken} but reserved {planned}; "
            "the update is withheld and the reservation counts as spent."
        )
    ledger.commit(reservation)
    log.info(
        "Round %d of run %s on %s: epsilon %.3f for the run, %.3f for the dataset",
        server_round,
        run_id,
        dataset,
        reservation.run_epsilon,
        reservation.dataset_epsilon,
    )
    outcome.metrics["dataset-epsilon"] = reservation.dataset_epsilon
    outcome.metrics["allow-export"] = int(policy.allow_export)
    return outcome


def guarded_release(
    site: Site,
    *,
    settings: RunSettings,
    data: SiteData,
    run_id: str,
    partition: int = 0,
) -> FeatureRelease:
    """Release the shared feature statistics only if the policy and budget allow it.

    Reserved in the ledger as round 0 before anything is computed, and marked spent
    before the sums leave the site, like a training round.

    Raises:
        PolicyRefused: the policy refuses the run or the release's noise, or the run has
            already released or trained here.
        PrivacyBudgetExceeded: the release would pass a per-run or per-dataset limit.
    """
    policy, ledger, dataset = site.policy, site.ledger, data.dataset_id
    policy.check_run(settings, server_round=1)
    delta = settings.dp.delta_for(len(data.train))
    policy.check_round(noise_multiplier=settings.feature_stats_noise, delta=delta)
    privacy = RunPrivacy(ledger.run_noise(dataset, run_id), ledger.history(dataset, run_id))
    if privacy.history:
        raise PolicyRefused(
            f"run {run_id} already has privacy spend recorded on {dataset}; shared feature "
            "statistics are released once per run, before any training"
        )
    reservation = ledger.reserve(
        dataset=dataset,
        run_id=run_id,
        server_round=0,
        step=feature_stats_step(settings.feature_stats_noise),
        delta=delta,
        accountant=settings.dp.accountant,
        max_run_epsilon=policy.max_run_epsilon,
        max_total_epsilon=policy.max_total_epsilon,
        budget_delta=policy.max_delta,
        fix_run_noise=False,
    )
    try:
        release = release_feature_sum(
            settings=settings, data=data, privacy=privacy, partition=partition, secret=site.secret
        )
    except BaseException:
        ledger.release(reservation)  # nothing left the site
        raise
    ledger.commit(reservation)
    log.info(
        "Feature statistics of run %s on %s: epsilon %.3f for the run, %.3f for the dataset",
        run_id,
        dataset,
        reservation.run_epsilon,
        reservation.dataset_epsilon,
    )
    return release
