"""A federation run's settings: read once from Flower's run config, checked, then typed."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from fedvault.common.data import BUNDLED, describe_bundled
from fedvault.common.errors import ConfigError
from fedvault.common.feature_stats import FEATURE_TRANSFORMS, check_stats_params
from fedvault.common.privacy import DPConfig

__all__ = ["RunSettings"]

Scalar = bool | int | float | str


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}(:[1-9][0-9]*)?")


def _unset(value: float) -> float | None:
    """Flower run-config values cannot be null: 0 stands for 'not set'."""
    return None if value == 0 else value


@dataclass(frozen=True)
class RunSettings:
    """Everything both sides must agree on for one run.

    Field names are the kebab-case run-config keys with ``_`` for ``-``.
    """

    num_server_rounds: int = 3
    dataset: str = "digits"
    model: str = "cnn"
    input_shape: str = ""
    num_classes: int = 0
    local_epochs: int = 3
    batch_size: int = 64
    optimizer: str = "sgd"
    learning_rate: float = 0.05
    momentum: float = 0.9
    max_grad_norm: float = 1.0
    noise_multiplier: float = 0.0
    target_epsilon: float = 8.0
    target_delta: float = 0.0
    accountant: str = "prv"
    grad_sample_mode: str = "fused"
    min_sites: int = 2
    wait_timeout: float = 120.0
    round_timeout: float = 600.0
    max_update_norm: float = 1000.0
    fraction_evaluate: float = 0.0
    holdout_fraction: float = 0.2
    test_fraction: float = 0.2
    non_iid_alpha: float = 0.0
    feature_transform: str = "none"
    feature_stats_noise: float = 0.0
    feature_stats_clip: float = 0.0
    seed: int = 42
    report_path: str = ""
    project: str = "default"
    run_name: str = ""
    model_name: str = ""
    checkpoint_every: int = 1
    init_from: str = ""

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str]] = [
            (self.num_server_rounds >= 1, "num-server-rounds must be >= 1"),
            (self.local_epochs >= 1, "local-epochs must be >= 1"),
            (self.batch_size >= 1, "batch-size must be >= 1"),
            (
                self.learning_rate > 0 and math.isfinite(self.learning_rate),
                "learning-rate must be a positive number",
            ),
            (0 <= self.momentum < 1, "momentum must be in [0, 1)"),
            (self.min_sites >= 1, "min-sites must be >= 1"),
            (self.checkpoint_every >= 1, "checkpoint-every must be >= 1 (rounds)"),
            (self.wait_timeout > 0, "wait-timeout must be > 0 seconds"),
            (self.round_timeout > 0, "round-timeout must be > 0 seconds"),
            (self.max_update_norm > 0, "max-update-norm must be > 0"),
            (0 <= self.fraction_evaluate <= 1, "fraction-evaluate must be in [0, 1]"),
            (0 < self.holdout_fraction < 1, "holdout-fraction must be in (0, 1)"),
            (0 < self.test_fraction < 1, "test-fraction must be in (0, 1)"),
            (self.non_iid_alpha >= 0, "non-iid-alpha must be >= 0 (0 means IID)"),
            (self.optimizer in ("sgd", "adam"), "optimizer must be 'sgd' or 'adam'"),
            (
                self.feature_transform in FEATURE_TRANSFORMS,
                f"feature-transform must be one of {', '.join(FEATURE_TRANSFORMS)}",
            ),
            (
                self.feature_stats_noise >= 0,
                "feature-stats-noise must be >= 0 (0 means per-site standardization)",
            ),
            (
                self.grad_sample_mode in ("fused", "hooks", "ghost", "functorch", "ew"),
                "grad-sample-mode must be one of fused, hooks, ghost, functorch, ew",
            ),
        ]
        for key, value in (("run-name", self.run_name), ("model-name", self.model_name)):
            checks.append(
                (
                    not value or bool(_NAME.fullmatch(value)),
                    f"{key} {value!r} must be 1-128 letters, digits, '.', '_' or '-', starting "
                    "with a letter or digit (the model store names versions by it)",
                )
            )
        checks.append(
            (
                not self.init_from or bool(_REF.fullmatch(self.init_from)),
                f"init-from {self.init_from!r} must be MODEL or MODEL:VERSION",
            )
        )
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"Invalid run config: {message}.")
        self.dp  # noqa: B018 -- builds and so validates the DP settings now, not mid-run
        if self.shared_stats:
            check_stats_params(
                noise_multiplier=self.feature_stats_noise, clip_norm=self.feature_stats_clip
            )

    @property
    def shared_stats(self) -> bool:
        """Whether sites scale features by shared, DP-released statistics (not their own)."""
        return self.feature_stats_noise > 0

    @property
    def dp(self) -> DPConfig:
        return DPConfig(
            max_grad_norm=self.max_grad_norm,
            noise_multiplier=_unset(self.noise_multiplier),
            target_epsilon=_unset(self.target_epsilon),
            target_delta=_unset(self.target_delta),
            accountant=self.accountant,
        )

    def model_io(self) -> tuple[tuple[int, ...], int]:
        """(example shape, number of classes): given in the config, or the bundled set's."""
        if self.input_shape and self.num_classes:
            try:
                shape = tuple(int(d) for d in self.input_shape.split(","))
            except ValueError:
                raise ConfigError(
                    f"input-shape must be comma-separated integers such as '30' or "
                    f"'1,8,8', got {self.input_shape!r}."
                ) from None
            return shape, self.num_classes
        if self.dataset in BUNDLED:
            return describe_bundled(self.dataset)
        raise ConfigError(
            f"Dataset {self.dataset!r} is not bundled: the run config must give input-shape "
            "and num-classes for the model."
        )

    @property
    def stored_model_name(self) -> str:
        """The model store id this run's versions go under."""
        if self.model_name:
            return self.model_name
        # A dataset label may be a path or hold spaces: keep the characters an id allows.
        derived = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{self.dataset}-{self.model}")
        return derived.strip("-._")[-128:].lstrip("-._") or "model"

    @property
    def alpha(self) -> float | None:
        return _unset(self.non_iid_alpha)

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> RunSettings:
        """Read Flower's run config (kebab-case keys); unknown keys are an error."""
        known = {f.name.replace("_", "-"): f for f in fields(cls)}
        unknown = sorted(set(run_config) - set(known))
        if unknown:
            raise ConfigError(f"Unknown run-config keys {unknown}; known keys are {sorted(known)}.")
        values: dict[str, Any] = {}
        for key, value in run_config.items():
            field = known[key]
            default = field.default
            values[field.name] = _cast(key, value, type(default))
        return cls(**values)

    def to_run_config(self) -> dict[str, Scalar]:
        """The kebab-case mapping Flower's ``--run-config`` takes."""
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self)}


def _cast(key: str, value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif kind is str and isinstance(value, str):
        return value
    raise ConfigError(f"Run-config key {key!r} must be a {kind.__name__}, got {value!r}.")
