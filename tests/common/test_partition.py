"""Demo partitioning: IID and Dirichlet splits cover every example exactly once."""

from __future__ import annotations

import numpy as np
import pytest

from fedvault.common.data import load_dataset
from fedvault.common.errors import ConfigError, DataError
from fedvault.common.partition import partition_indices, site_partition


@pytest.mark.parametrize("alpha", [None, 0.5, 100.0])
def test_partitions_cover_each_example_once(alpha):
    labels = load_dataset("digits").y
    parts = partition_indices(labels, num_partitions=5, seed=3, alpha=alpha)
    joined = np.concatenate(parts)
    assert len(joined) == len(labels) and len(np.unique(joined)) == len(labels)
    assert min(len(p) for p in parts) >= 10


def test_iid_partitions_are_balanced():
    labels = np.arange(100) % 4
    sizes = [len(p) for p in partition_indices(labels, num_partitions=3, seed=0)]
    assert max(sizes) - min(sizes) <= 1


def test_small_alpha_is_more_skewed_than_large_alpha():
    labels = load_dataset("digits").y

    def skew(alpha):
        parts = partition_indices(labels, num_partitions=5, seed=7, alpha=alpha)
        # mean share of the most frequent class within each partition
        return np.mean([np.bincount(labels[p], minlength=10).max() / len(p) for p in parts])

    assert skew(0.3) > skew(100.0) + 0.2


def test_same_seed_same_partitions_on_every_site():
    labels = load_dataset("digits").y
    a = partition_indices(labels, num_partitions=3, seed=9, alpha=0.5)
    b = partition_indices(labels, num_partitions=3, seed=9, alpha=0.5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_bad_arguments_are_clear():
    labels = np.zeros(20, dtype=np.int64)
    with pytest.raises(ConfigError, match="num-partitions"):
        partition_indices(labels, num_partitions=0, seed=0)
    with pytest.raises(ConfigError, match="alpha"):
        partition_indices(labels, num_partitions=2, seed=0, alpha=-1.0)
    with pytest.raises(DataError, match="cannot give 5 partitions"):
        partition_indices(labels, num_partitions=5, seed=0)
    with pytest.raises(ConfigError, match=r"partition-id must be in 0\.\.2"):
        site_partition(load_dataset("digits"), partition_id=3, num_partitions=3, seed=0, alpha=None)
