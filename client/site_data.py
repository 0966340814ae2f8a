"""A site's training and test tensors for one run, built from its node config and run settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from fedvault.common.data import BUNDLED, Standardizer, check_fits, load_dataset
from fedvault.common.data import stratified_split as _split
from fedvault.common.errors import ConfigError
from fedvault.common.feature_stats import SharedScaling, transform_features
from fedvault.common.partition import shared_split, site_partition
from fedvault.common.run_config import RunSettings

__all__ = ["SiteData", "load_site_data"]


@dataclass(frozen=True)
class SiteData:
    """One site's scaled train and test sets.

    Scaled by the run's shared scaling when it has one, else standardized on the site's own
    training split. ``features`` is the training split after the run's feature transform,
    before any centring: what shared feature statistics are computed from.
    """

    name: str
    train: TensorDataset
    test: TensorDataset
    dataset_id: str = ""
    features: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))


def _tensors(x: np.ndarray, y: np.ndarray) -> TensorDataset:
    return TensorDataset(torch.from_numpy(x), torch.from_numpy(y))


def load_site_data(
    node_config: Mapping[str, Any],
    settings: RunSettings,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    scaling: SharedScaling | None = None,
) -> SiteData:
    """Load what this site trains on.

    Features go through the run's ``feature-transform``, then are centred by ``scaling``
    (shared by every site and the server) when given, or else standardized on the site's
    own training split.

    Node config keys: ``data-path`` (the site's own CSV/NPZ; default: the run's bundled
    dataset), ``label-column`` (CSV label column, default ``label``), ``dataset-id`` (what
    the privacy budget is kept against; default: the resolved data path), and for demos
    ``partition-id``/``num-partitions`` (take one partition of a shared bundled set).

    Raises:
        DataError: the data cannot be read or does not fit the run's model.
        ConfigError: an inconsistent node config, or a scaling for another transform.
    """
    source = str(node_config.get("data-path", "") or settings.dataset)
    ds = load_dataset(
        source,
        label_column=str(node_config.get("label-column", "label")),
        num_classes=num_classes,
    )
    check_fits(ds, input_shape=input_shape, num_classes=num_classes)
    if "partition-id" in node_config or "num-partitions" in node_config:
        if source not in BUNDLED:
            raise ConfigError(
                "partition-id/num-partitions split a shared bundled dataset for demos; a "
                "site with its own data-path trains on all of it."
            )
        pool, _holdout = shared_split(
            ds, holdout_fraction=settings.holdout_fraction, seed=settings.seed
        )
        ds = site_partition(
            pool,
            partition_id=int(node_config.get("partition-id", 0)),
            num_partitions=int(node_config.get("num-partitions", 1)),
            seed=settings.seed,
            alpha=settings.alpha,
        )
    site_seed = settings.seed + 1 + int(node_config.get("partition-id", 0))
    train, test = _split(ds, test_fraction=settings.test_fraction, seed=site_seed)
    features = transform_features(train.x, settings.feature_transform)
    test_x = transform_features(test.x, settings.feature_transform)
    if scaling is not None:
        if scaling.transform != settings.feature_transform:
            raise ConfigError(
                f"The shared scaling is for feature-transform {scaling.transform!r} but the "
                f"run uses {settings.feature_transform!r}."
            )
        train_x, test_x = scaling.centre(features), scaling.centre(test_x)
    else:
        scaler = Standardizer.fit(features)
        train_x, test_x = scaler.transform(features), scaler.transform(test_x)
    name = str(
        node_config.get("site-name", "") or f"partition-{node_config.get('partition-id', 0)}"
    )
    return SiteData(
        name=name,
        train=_tensors(train_x, train.y),
        test=_tensors(test_x, test.y),
        dataset_id=_dataset_id(node_config, source),
        features=features,
    )


def _dataset_id(node_config: Mapping[str, Any], source: str) -> str:
    """What the site's privacy budget is kept against: one id per underlying dataset."""
    given = str(node_config.get("dataset-id", "") or "")
    if given:
        return given
    if source in BUNDLED:
        if "partition-id" in node_config:
            part = f"{node_config['partition-id']}-of-{node_config.get('num-partitions', 1)}"
            return f"{source}/partition-{part}"
        return source
    return str(Path(source).resolve())
