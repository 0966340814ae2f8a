"""Shared feature scaling: per-site feature sums released by a Gaussian mechanism, combined.

Standardizing each site on its own statistics maps the same record to different inputs at
different sites when their labels are skewed. Instead every site releases the sum of its
(transformed, clipped) records plus Gaussian noise, once per run, before training; the
server divides the total by the sites' example counts and sends the same centre to all.

The release is a Gaussian mechanism with L2 sensitivity ``clip_norm`` (one record added
or removed), i.e. one DP-SGD step at sample rate 1 with the same noise multiplier: that is
how it enters the run's privacy history, so the accountant composes it with DP-SGD.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedvault.common.errors import DataError, PrivacyConfigError
from fedvault.common.privacy import PrivacyStep

__all__ = [
    "FEATURE_TRANSFORMS",
    "SharedScaling",
    "check_stats_params",
    "combine_feature_sums",
    "feature_stats_step",
    "noisy_feature_sum",
    "transform_features",
]

FEATURE_TRANSFORMS = ("none", "log")

# "log" is log(LOG_UNIT + x) for x >= 0, mirrored (2 log LOG_UNIT - log(LOG_UNIT - x)) for
# x < 0 so that it stays monotone and defined everywhere. It is fixed in advance (no data
# looked at): it makes positive measurements unit-free, so their spreads become relative
# spreads of a similar size whatever each feature's unit.
LOG_UNIT = 1e-3


def transform_features(x: np.ndarray, transform: str) -> np.ndarray:
    """Apply a data-independent, per-record transform to examples ``x`` (float32 out)."""
    if transform == "none":
        return np.asarray(x, dtype=np.float32)
    if transform == "log":
        magnitude = np.log(LOG_UNIT + np.abs(np.asarray(x, dtype=np.float64)))
        out: np.ndarray = np.where(x >= 0, magnitude, 2 * np.log(LOG_UNIT) - magnitude)
        return out.astype(np.float32)
    raise PrivacyConfigError(
        f"feature-transform must be one of {list(FEATURE_TRANSFORMS)}, got {transform!r}."
    )


def check_stats_params(*, noise_multiplier: float, clip_norm: float) -> None:
    """Raise PrivacyConfigError unless both are positive finite numbers."""
    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise PrivacyConfigError(
            f"feature-stats-noise must be a positive number, got {noise_multiplier}; "
            "0 turns shared feature statistics off."
        )
    if not (math.isfinite(clip_norm) and clip_norm > 0):
        raise PrivacyConfigError(
            f"feature-stats-clip must be a positive number (the L2 bound on one record), "
            f"got {clip_norm}."
        )


def feature_stats_step(noise_multiplier: float) -> PrivacyStep:
    """The release as the accountant sees it: one full-batch step at this noise."""
    return PrivacyStep(noise_multiplier=noise_multiplier, sample_rate=1.0, steps=1)


def noisy_feature_sum(
    x: np.ndarray,
    *,
    clip_norm: float,
    noise_multiplier: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Sum of the records of ``x`` (one per row, flattened), each clipped to L2 norm
    ``clip_norm``, plus Gaussian noise of standard deviation ``noise_multiplier * clip_norm``.

    ``x`` is already transformed. Returns float64, one value per flattened feature.
    """
    check_stats_params(noise_multiplier=noise_multiplier, clip_norm=clip_norm)
    rows = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    if len(rows) == 0:
        raise DataError("A site with no training examples cannot release feature sums.")
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    clipped = rows * np.minimum(1.0, clip_norm / np.maximum(norms, 1e-12))
    noise = rng.normal(0.0, noise_multiplier * clip_norm, size=rows.shape[1])
    total: np.ndarray = clipped.sum(axis=0) + noise
    return total


@dataclass(frozen=True)
class SharedScaling:
    """The scaling every site and the server apply: transform, then subtract ``center``."""

    transform: str
    center: np.ndarray

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Scale examples ``x`` (any shape whose flattened size matches ``center``)."""
        return self.centre(transform_features(x, self.transform))

    def centre(self, t: np.ndarray) -> np.ndarray:
        """Subtract the centre from examples ``t`` that went through ``transform`` already."""
        flat = t.reshape(len(t), -1)
        if flat.shape[1] != self.center.size:
            raise DataError(
                f"Examples have {flat.shape[1]} features but the shared scaling has "
                f"{self.center.size}."
            )
        out: np.ndarray = (flat - self.center.astype(np.float32)).reshape(t.shape)
        return out.astype(np.float32)


def combine_feature_sums(
    sums: list[np.ndarray], counts: list[int], *, transform: str
) -> SharedScaling:
    """The shared centre: the sites' noisy sums added up, over their example counts.

    Raises:
        DataError: no sites, mismatched feature counts, or no examples.
    """
    if not sums or len(sums) != len(counts):
        raise DataError("Shared feature statistics need one sum and one count per site.")
    sizes = {s.size for s in sums}
    if len(sizes) != 1:
        raise DataError(f"Sites sent feature sums of different sizes {sorted(sizes)}.")
    total = int(sum(counts))
    if total < 1:
        raise DataError("Shared feature statistics need at least one example.")
    center = np.sum([np.asarray(s, dtype=np.float64).ravel() for s in sums], axis=0) / total
    if not np.isfinite(center).all():
        raise DataError("Sites sent feature sums that are not finite.")
    return SharedScaling(transform=transform, center=center.astype(np.float32))
