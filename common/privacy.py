"""Privacy math shared by site and server: DP settings, noise calibration, epsilon accounting."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedvault.common.errors import PrivacyConfigError

if TYPE_CHECKING:
    from opacus.accountants.accountant import IAccountant

__all__ = [
    "ACCOUNTANTS",
    "DPConfig",
    "PrivacyStep",
    "default_delta",
    "epsilon_spent",
    "noise_for_target",
]

ACCOUNTANTS = ("prv", "rdp")


@dataclass(frozen=True)
class PrivacyStep:
    """``steps`` DP-SGD steps at one noise multiplier and Poisson sample rate."""

    noise_multiplier: float
    sample_rate: float
    steps: int


@dataclass(frozen=True)
class DPConfig:
    """A site's DP-SGD settings for one run, checked when built.

    Exactly one of ``noise_multiplier`` and ``target_epsilon`` is given: with a target, the
    noise is calibrated so that the whole run (every round) spends at most that epsilon.
    """

    max_grad_norm: float
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    target_delta: float | None = None
    accountant: str = "prv"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise PrivacyConfigError(
                f"max-grad-norm must be a positive number, got {self.max_grad_norm}."
            )
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise PrivacyConfigError(
                "Give exactly one of noise-multiplier and target-epsilon "
                f"(got noise-multiplier={self.noise_multiplier}, "
                f"target-epsilon={self.target_epsilon})."
            )
        if self.noise_multiplier is not None and not (
            math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0
        ):
            raise PrivacyConfigError(
                f"noise-multiplier must be a positive number, got {self.noise_multiplier}; "
                "0 would mean no privacy at all."
            )
        if self.target_epsilon is not None and not (
            math.isfinite(self.target_epsilon) and self.target_epsilon > 0
        ):
            raise PrivacyConfigError(
                f"target-epsilon must be a positive number, got {self.target_epsilon}."
            )
        if self.target_delta is not None and not 0 < self.target_delta < 1:
            raise PrivacyConfigError(
                f"target-delta must be in (0, 1), got {self.target_delta}; choose one "
                "well below 1/n for n training examples."
            )
        if self.accountant not in ACCOUNTANTS:
            raise PrivacyConfigError(
                f"accountant must be one of {list(ACCOUNTANTS)}, got {self.accountant!r}."
            )

    def delta_for(self, num_examples: int) -> float:
        """The delta to account with for a site holding ``num_examples`` training examples."""
        if self.target_delta is None:
            return default_delta(num_examples)
        if self.target_delta >= 1 / num_examples:
            raise PrivacyConfigError(
                f"target-delta {self.target_delta} is not below 1/n = {1 / num_examples:.2e} "
                f"for this site's {num_examples} training examples; such a delta allows "
                "releasing whole records. Lower it or leave it unset for the default."
            )
        return self.target_delta


def default_delta(num_examples: int) -> float:
    """A delta well below 1/n: one significant digit at or under 1/(10 n)."""
    if num_examples < 1:
        raise PrivacyConfigError("A site with no training examples cannot train.")
    bound = 1.0 / (10 * num_examples)
    exponent = math.floor(math.log10(bound))
    return float(math.floor(bound / 10**exponent) * 10**exponent)


def _make_accountant(name: str, history: Iterable[PrivacyStep]) -> IAccountant:
    # Composition does not depend on order: merging steps that share (noise, rate) keeps
    # the result identical and the cost flat as rounds accumulate (PRV is slow per entry).
    # Opacus is imported where it is used: it pulls in torch, which the admin API (that
    # only validates run settings) should not load at start-up.
    from opacus.accountants import PRVAccountant, RDPAccountant

    merged: dict[tuple[float, float], int] = {}
    for s in history:
        key = (s.noise_multiplier, s.sample_rate)
        merged[key] = merged.get(key, 0) + s.steps
    accountant: IAccountant = PRVAccountant() if name == "prv" else RDPAccountant()
    accountant.history = [(sigma, rate, steps) for (sigma, rate), steps in merged.items()]
    return accountant


def epsilon_spent(
    history: Sequence[PrivacyStep], *, delta: float, accountant: str = "prv"
) -> float:
    """Epsilon of the composition of every step in ``history`` at ``delta``.

    A fresh accountant is built from the recorded steps alone, so anyone holding the same
    history computes the same number.
    """
    if not history:
        return 0.0
    if accountant not in ACCOUNTANTS:
        raise PrivacyConfigError(f"accountant must be one of {list(ACCOUNTANTS)}.")
    return float(_make_accountant(accountant, history).get_epsilon(delta=delta))


def noise_for_target(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "prv",
    prior: Sequence[PrivacyStep] = (),
) -> float:
    """The smallest noise multiplier keeping ``steps`` steps at ``sample_rate`` within target.

    ``prior`` are releases already made in the same run (shared feature statistics): the
    steps are calibrated so that their composition with ``prior`` stays within target.
    """
    if steps < 1 or not 0 < sample_rate <= 1:
        raise PrivacyConfigError(
            f"Cannot calibrate noise for {steps} steps at sample rate {sample_rate}."
        )
    if prior:
        return _noise_after(
            target_epsilon=target_epsilon,
            delta=delta,
            step=PrivacyStep(1.0, sample_rate, steps),
            accountant=accountant,
            prior=list(prior),
        )
    from opacus.accountants.utils import get_noise_multiplier

    try:
        return float(
            get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=accountant,
                epsilon_tolerance=0.005,
            )
        )
    except ValueError as e:
        raise PrivacyConfigError(
            f"No noise multiplier reaches epsilon {target_epsilon} at delta {delta:.1e} over "
            f"{steps} steps at sample rate {sample_rate:.4f}: {e}. Raise target-epsilon, or "
            "lower the rounds, local epochs or batch size."
        ) from e


def _noise_after(
    *,
    target_epsilon: float,
    delta: float,
    step: PrivacyStep,
    accountant: str,
    prior: list[PrivacyStep],
) -> float:
    """Bisect (in log space) for the smallest noise of ``step`` that fits after ``prior``."""
    already = epsilon_spent(prior, delta=delta, accountant=accountant)
    if already >= target_epsilon:
        raise PrivacyConfigError(
            f"The releases made before training already spend epsilon {already:.3f} of the "
            f"target {target_epsilon}: nothing is left for DP-SGD. Raise feature-stats-noise "
            "or target-epsilon."
        )

    def spent(noise: float) -> float:
        trial = PrivacyStep(noise, step.sample_rate, step.steps)
        return epsilon_spent([*prior, trial], delta=delta, accountant=accountant)

    low, high = 0.05, 1.0
    while spent(high) > target_epsilon:
        low, high = high, high * 2
        if high > 1e4:
            raise PrivacyConfigError(
                f"No noise multiplier reaches epsilon {target_epsilon} at delta {delta:.1e} "
                f"after the earlier releases; raise target-epsilon or feature-stats-noise."
            )
    while high / low > 1.001:
        mid = math.sqrt(low * high)
        if spent(mid) > target_epsilon:
            low = mid
        else:
            high = mid
    return high
