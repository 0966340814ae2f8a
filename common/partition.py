"""Split one dataset into per-site partitions for demos: IID or Dirichlet(alpha) non-IID."""

from __future__ import annotations

import numpy as np

from fedvault.common.data import Dataset, stratified_split
from fedvault.common.errors import ConfigError, DataError

__all__ = ["partition_indices", "shared_split", "site_partition"]


def partition_indices(
    labels: np.ndarray,
    *,
    num_partitions: int,
    seed: int,
    alpha: float | None = None,
    min_size: int = 10,
) -> list[np.ndarray]:
    """Return one sorted index array per partition; together they cover every example once.

    Args:
        labels: integer class labels, one per example.
        num_partitions: how many sites to split across (>= 1).
        seed: the same seed gives the same partitions on every site.
        alpha: ``None`` for IID; otherwise the Dirichlet concentration (smaller is more
            skewed; 0.5 is a common "strongly non-IID" setting).
        min_size: every partition gets at least this many examples (resampled up to 100
            times; a clear error if the data cannot satisfy it).

    Raises:
        ConfigError: a bad partition count or alpha.
        DataError: too few examples for the requested partitions.
    """
    n = int(labels.shape[0])
    if num_partitions < 1:
        raise ConfigError(f"num-partitions must be >= 1, got {num_partitions}.")
    if alpha is not None and not alpha > 0:
        raise ConfigError(f"The Dirichlet alpha must be > 0, got {alpha}.")
    if n < num_partitions * min_size:
        raise DataError(
            f"{n} examples cannot give {num_partitions} partitions of at least {min_size}."
        )
    rng = np.random.default_rng(seed)
    if alpha is None:
        return [np.sort(p) for p in np.array_split(rng.permutation(n), num_partitions)]
    for _ in range(100):
        parts: list[list[int]] = [[] for _ in range(num_partitions)]
        for label in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == label))
            shares = rng.dirichlet(np.full(num_partitions, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
            for part, chunk in zip(parts, np.split(members, cuts), strict=True):
                part.extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise DataError(
        f"Could not draw {num_partitions} Dirichlet(alpha={alpha}) partitions of at least "
        f"{min_size} examples from {n}; use a larger alpha or fewer partitions."
    )


def shared_split(ds: Dataset, *, holdout_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Split a dataset every party holds (a bundled demo set) into (site pool, server holdout).

    The server evaluates on the holdout; sites partition the pool. Both sides call this
    with the run's seed and so agree on the split without exchanging any data.
    """
    return stratified_split(ds, test_fraction=holdout_fraction, seed=seed)


def site_partition(
    pool: Dataset, *, partition_id: int, num_partitions: int, seed: int, alpha: float | None
) -> Dataset:
    """The examples of one demo site: partition ``partition_id`` of ``num_partitions``."""
    if not 0 <= partition_id < num_partitions:
        raise ConfigError(f"partition-id must be in 0..{num_partitions - 1}, got {partition_id}.")
    parts = partition_indices(pool.y, num_partitions=num_partitions, seed=seed, alpha=alpha)
    return pool.subset(parts[partition_id])
