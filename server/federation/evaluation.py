"""Server-side evaluation of the global model on a held-out set no site trains on."""

from __future__ import annotations

from collections.abc import Callable

import torch
from flwr.app import ArrayRecord, MetricRecord
from torch.utils.data import TensorDataset

from fedvault.common.data import BUNDLED, Standardizer, load_dataset
from fedvault.common.device import pick_device
from fedvault.common.evaluation import evaluate
from fedvault.common.feature_stats import SharedScaling, transform_features
from fedvault.common.nets import build_model
from fedvault.common.partition import shared_split
from fedvault.common.run_config import RunSettings

__all__ = ["holdout_evaluator"]

Evaluator = Callable[[int, ArrayRecord], MetricRecord | None]


def holdout_evaluator(
    settings: RunSettings, scaling: SharedScaling | None = None
) -> Evaluator | None:
    """An ``evaluate_fn`` for ``strategy.start``, or None when the run has no shared holdout.

    For a bundled dataset the server holds out ``holdout-fraction`` of it (sites never see
    those rows). With the run's shared ``scaling`` it scales the holdout exactly as every
    site scales its data; without one it standardizes it with its own statistics, as each
    site does with its own data.
    """
    if settings.dataset not in BUNDLED:
        return None
    _pool, holdout = shared_split(
        load_dataset(settings.dataset),
        holdout_fraction=settings.holdout_fraction,
        seed=settings.seed,
    )
    if scaling is not None:
        x = scaling.apply(holdout.x)
    else:
        features = transform_features(holdout.x, settings.feature_transform)
        x = Standardizer.fit(features).transform(features)
    data = TensorDataset(torch.from_numpy(x), torch.from_numpy(holdout.y))
    input_shape, num_classes = settings.model_io()
    device = pick_device()

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model = build_model(settings.model, input_shape=input_shape, num_classes=num_classes)
        model.load_state_dict(arrays.to_torch_state_dict())
        loss, accuracy = evaluate(model, data, device=device)
        return MetricRecord({"loss": loss, "accuracy": accuracy, "num-examples": len(data)})

    return evaluate_fn
