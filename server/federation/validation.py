"""Check a site's model update before it may touch the global model."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from flwr.app import ArrayRecord

from fedvault.common.errors import UpdateRejected

__all__ = ["to_numpy", "validate_update"]


def to_numpy(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    """Decode an ArrayRecord; an undecodable array is a rejection, not a crash."""
    out: dict[str, np.ndarray] = {}
    for key, array in arrays.items():
        try:
            out[key] = array.numpy()
        except Exception as e:
            raise UpdateRejected(f"array {key!r} cannot be decoded ({e})") from e
    return out


def validate_update(
    reference: Mapping[str, np.ndarray], candidate: ArrayRecord, *, max_norm: float
) -> dict[str, np.ndarray]:
    """Return the decoded update if it is well formed, else raise UpdateRejected.

    Checks, in order: the same array names as the global model, each array's shape and
    dtype, every value finite, and the L2 norm of (update - global) at most ``max_norm``.
    """
    arrays = to_numpy(candidate)
    missing = sorted(set(reference) - set(arrays))
    extra = sorted(set(arrays) - set(reference))
    if missing or extra:
        raise UpdateRejected(f"wrong arrays: missing {missing}, unexpected {extra}")
    squared = 0.0
    for key, ref in reference.items():
        got = arrays[key]
        if got.shape != ref.shape:
            raise UpdateRejected(f"array {key!r} has shape {got.shape}, expected {ref.shape}")
        if got.dtype != ref.dtype:
            raise UpdateRejected(f"array {key!r} has dtype {got.dtype}, expected {ref.dtype}")
        if np.issubdtype(got.dtype, np.floating):
            if not np.isfinite(got).all():
                raise UpdateRejected(f"array {key!r} holds NaN or infinite values")
            diff = got.astype(np.float64) - ref.astype(np.float64)
            squared += float(np.dot(diff.ravel(), diff.ravel()))
    norm = math.sqrt(squared)
    if not math.isfinite(norm) or norm > max_norm:
        raise UpdateRejected(
            f"update norm {norm:.4g} exceeds the bound max-update-norm={max_norm:g}"
        )
    return arrays
