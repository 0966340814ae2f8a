"""One site's share of a round, as plain functions: DP training with run-long accounting."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from fedvault.client.run_privacy import RunPrivacy
from fedvault.client.site_data import SiteData
from fedvault.client.training import steps_per_epoch, train_local
from fedvault.common.device import seed_everything
from fedvault.common.nets import build_model
from fedvault.common.privacy import PrivacyStep, epsilon_spent, noise_for_target
from fedvault.common.run_config import RunSettings

__all__ = ["RoundOutcome", "load_global_model", "round_noise", "round_seed", "train_round"]

log = logging.getLogger("fedvault.client")


@dataclass(frozen=True)
class RoundOutcome:
    """The trained weights and the numbers the site reports for this round."""

    state_dict: dict[str, torch.Tensor]
    metrics: dict[str, Any]


def load_global_model(
    settings: RunSettings, state_dict: Mapping[str, torch.Tensor]
) -> torch.nn.Module:
    """Build the run's model and load the global weights into it."""
    input_shape, num_classes = settings.model_io()
    model = build_model(settings.model, input_shape=input_shape, num_classes=num_classes)
    model.load_state_dict(dict(state_dict))
    return model


def round_noise(
    settings: RunSettings, privacy: RunPrivacy, *, num_examples: int, delta: float
) -> float:
    """The run's noise multiplier: given, or calibrated once so every round fits the target.

    Calibrated with whatever ``privacy`` already holds (the shared feature statistics'
    release) composed in, so that release and every round together fit the target.
    """
    if privacy.noise_multiplier is not None:
        return privacy.noise_multiplier
    dp = settings.dp
    if dp.noise_multiplier is not None:
        return dp.noise_multiplier
    assert dp.target_epsilon is not None  # DPConfig guarantees one of the two
    per_epoch = steps_per_epoch(num_examples, settings.batch_size)
    # Releases made before training (shared feature statistics) are already in the
    # history; DP-SGD gets what the target leaves after them.
    return noise_for_target(
        target_epsilon=dp.target_epsilon,
        delta=delta,
        sample_rate=1.0 / per_epoch,
        steps=settings.num_server_rounds * settings.local_epochs * per_epoch,
        accountant=dp.accountant,
        prior=privacy.history,
    )


def round_seed(seed: int, *, server_round: int, partition: int, secret: bytes | None) -> int:
    """The seed of a round's Poisson sampling and DP noise.

    DP-SGD's guarantee needs both to be unknown to whoever sees the update. With the site's
    ``secret`` they are an HMAC of the run seed and round under a key only the site holds,
    so the same site reproduces its own rounds but the server cannot. Without one they
    follow from the run seed (tests and benchmarks only; see README on randomness).
    """
    if secret is None:
        return seed * 1_000_003 + server_round * 1009 + partition
    mac = hmac.new(secret, f"{seed}|{server_round}|{partition}".encode(), hashlib.sha256)
    return int.from_bytes(mac.digest()[:8], "big") >> 1


def train_round(
    *,
    settings: RunSettings,
    data: SiteData,
    global_weights: Mapping[str, torch.Tensor],
    server_round: int,
    privacy: RunPrivacy,
    device: torch.device,
    partition: int = 0,
    secret: bytes | None = None,
) -> RoundOutcome:
    """Train the global model on this site's data with DP-SGD and record the spend.

    ``privacy`` is updated in place (noise fixed for the run, this round's steps appended);
    the caller persists it. Epsilon is the composition of every step recorded so far.
    ``secret`` is the site's own key for its sampling and noise randomness: without it they
    derive from the run's seed alone, which the server knows (for tests and benchmarks).
    """
    dp = settings.dp
    n = len(data.train)
    delta = dp.delta_for(n)
    privacy.noise_multiplier = round_noise(settings, privacy, num_examples=n, delta=delta)
    generator = seed_everything(
        round_seed(settings.seed, server_round=server_round, partition=partition, secret=secret)
    )
    model = load_global_model(settings, global_weights)
    result = train_local(
        model=model,
        data=data.train,
        epochs=settings.local_epochs,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        optimizer=settings.optimizer,
        momentum=settings.momentum,
        noise_multiplier=privacy.noise_multiplier,
        max_grad_norm=dp.max_grad_norm,
        device=device,
        generator=generator,
        grad_sample_mode=settings.grad_sample_mode,
    )
    privacy.history.append(PrivacyStep(privacy.noise_multiplier, result.sample_rate, result.steps))
    epsilon = epsilon_spent(privacy.history, delta=delta, accountant=dp.accountant)
    log.info(
        "Round %d at %s: %d steps, loss %.4f, epsilon %.3f (delta %.1e)",
        server_round,
        data.name,
        result.steps,
        result.loss,
        epsilon,
        delta,
    )
    metrics: dict[str, Any] = {
        "num-examples": n,
        "epsilon": epsilon,
        "delta": delta,
        "noise-multiplier": privacy.noise_multiplier,
        "sample-rate": result.sample_rate,
        "steps": result.steps,
        "total-steps": privacy.total_steps,
        "max-grad-norm": dp.max_grad_norm,
    }
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return RoundOutcome(state_dict=weights, metrics=metrics)
