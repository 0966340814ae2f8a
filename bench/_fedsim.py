"""In-process FedAvg over the real site and server code, for benchmarks (no Flower processes).

Each simulated site runs ``client.local_round.train_round`` (the ClientApp's own code) on
its partition; the server side is ``server.strategy.weighted_average`` and the server's
held-out evaluation. Only the transport is left out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from flwr.app import ArrayRecord
from torch.utils.data import ConcatDataset, TensorDataset

from fedvault.client.local_round import load_global_model, train_round
from fedvault.client.run_privacy import RunPrivacy
from fedvault.client.shared_stats import release_feature_sum
from fedvault.client.site_data import SiteData, load_site_data
from fedvault.client.training import train_local
from fedvault.common.device import pick_device, seed_everything
from fedvault.common.feature_stats import SharedScaling, combine_feature_sums
from fedvault.common.nets import build_model
from fedvault.common.run_config import RunSettings
from fedvault.server.federation.evaluation import holdout_evaluator
from fedvault.server.federation.strategy import weighted_average


@dataclass
class SimResult:
    accuracy: float
    epsilons: list[float] = field(default_factory=list)
    seconds: float = 0.0


def _sites(settings: RunSettings, num_sites: int, scaling: SharedScaling | None = None):
    shape, classes = settings.model_io()
    return [
        load_site_data(
            {"partition-id": i, "num-partitions": num_sites},
            settings,
            input_shape=shape,
            num_classes=classes,
            scaling=scaling,
        )
        for i in range(num_sites)
    ]


def _shared_scaling(
    settings: RunSettings, sites: list[SiteData], ledgers: list[RunPrivacy] | None
) -> SharedScaling | None:
    """The run's shared scaling, as the ServerApp collects it before round 1.

    With ``ledgers`` each site releases its noisy clipped sum (``client.shared_stats``, the
    ClientApp's code), charged to its ledger; without (non-private baselines) the exact sums.
    """
    if not settings.shared_stats:
        return None
    if ledgers is None:
        sums = [site.features.reshape(len(site.features), -1).sum(axis=0) for site in sites]
    else:
        sums = [
            release_feature_sum(
                settings=settings, data=site, privacy=ledger, partition=i
            ).feature_sum
            for i, (site, ledger) in enumerate(zip(sites, ledgers, strict=True))
        ]
    counts = [len(site.train) for site in sites]
    return combine_feature_sums(sums, counts, transform=settings.feature_transform)


def _initial(settings: RunSettings) -> dict[str, torch.Tensor]:
    seed_everything(settings.seed)
    shape, classes = settings.model_io()
    return build_model(settings.model, input_shape=shape, num_classes=classes).state_dict()


def _accuracy(settings: RunSettings, weights, scaling: SharedScaling | None) -> float:
    evaluate = holdout_evaluator(settings, scaling)
    assert evaluate is not None
    return float(evaluate(settings.num_server_rounds, ArrayRecord(weights))["accuracy"])


def _train_plain(settings: RunSettings, weights, data: TensorDataset, *, epochs: int, seed: int):
    """Non-private local training from ``weights`` (the baselines); returns new weights."""
    model = load_global_model(settings, weights)
    train_local(
        model=model,
        data=data,
        epochs=epochs,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        optimizer=settings.optimizer,
        momentum=settings.momentum,
        noise_multiplier=None,
        max_grad_norm=settings.max_grad_norm,
        device=pick_device(),
        generator=seed_everything(seed),
    )
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def federated(settings: RunSettings, *, num_sites: int, private: bool = True) -> SimResult:
    """FedAvg for ``settings.num_server_rounds`` rounds; DP-SGD at each site if ``private``."""
    start = time.perf_counter()
    device = pick_device()
    sites = _sites(settings, num_sites)
    ledgers = [RunPrivacy(noise_multiplier=None, history=[]) for _ in sites]
    scaling = _shared_scaling(settings, sites, ledgers if private else None)
    if scaling is not None:
        sites = _sites(settings, num_sites, scaling)
    weights = _initial(settings)
    epsilons = [0.0] * num_sites
    for rnd in range(1, settings.num_server_rounds + 1):
        updates, counts = [], []
        for i, (site, ledger) in enumerate(zip(sites, ledgers, strict=True)):
            if private:
                out = train_round(
                    settings=settings,
                    data=site,
                    global_weights=weights,
                    server_round=rnd,
                    privacy=ledger,
                    device=device,
                    partition=i,
                )
                state, epsilons[i] = out.state_dict, out.metrics["epsilon"]
            else:
                state = _train_plain(
                    settings,
                    weights,
                    site.train,
                    epochs=settings.local_epochs,
                    seed=rnd * 1009 + i,
                )
            updates.append({k: v.numpy() for k, v in state.items()})
            counts.append(float(len(site.train)))
        averaged = weighted_average(updates, counts)
        weights = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in averaged.items()}
    return SimResult(_accuracy(settings, weights, scaling), epsilons, time.perf_counter() - start)


def centralized(settings: RunSettings, *, epochs: int) -> SimResult:
    """Non-private training on all sites' training data pooled in one place."""
    start = time.perf_counter()
    sites = _sites(settings, 1)
    scaling = _shared_scaling(settings, sites, None)
    if scaling is not None:
        sites = _sites(settings, 1, scaling)
    pooled = ConcatDataset([s.train for s in sites])
    x = torch.stack([pooled[i][0] for i in range(len(pooled))])
    y = torch.stack([pooled[i][1] for i in range(len(pooled))])
    weights = _train_plain(
        settings, _initial(settings), TensorDataset(x, y), epochs=epochs, seed=settings.seed
    )
    return SimResult(_accuracy(settings, weights, scaling), [], time.perf_counter() - start)
