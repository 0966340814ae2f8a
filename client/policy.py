"""A site's own policy: the limits it enforces on every round, whatever the server asks."""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from fedvault.common.errors import ConfigError, PolicyRefused
from fedvault.common.nets import MODELS
from fedvault.common.run_config import RunSettings
from fedvault.policies import SITE_POLICY_FILE, default_site_policy_text

__all__ = ["POLICY_FILE", "SitePolicy", "default_policy_text"]

POLICY_FILE = SITE_POLICY_FILE

# (section, key) for each field, so errors name the field as the file spells it.
_LAYOUT: dict[str, tuple[str, str]] = {
    "max_total_epsilon": ("privacy", "max-total-epsilon"),
    "max_run_epsilon": ("privacy", "max-run-epsilon"),
    "max_delta": ("privacy", "max-delta"),
    "min_noise_multiplier": ("privacy", "min-noise-multiplier"),
    "max_rounds_per_run": ("runs", "max-rounds-per-run"),
    "allowed_models": ("runs", "allowed-models"),
    "allowed_projects": ("runs", "allowed-projects"),
    "allow_export": ("models", "allow-export"),
}


def default_policy_text() -> str:
    """The documented default policy (``policies/site-policy.toml``)."""
    return default_site_policy_text()


@dataclass(frozen=True)
class SitePolicy:
    """Limits a site enforces. Every field is checked when the policy is built."""

    max_total_epsilon: float = 10.0
    max_run_epsilon: float = 8.0
    max_delta: float = 1e-3
    min_noise_multiplier: float = 0.5
    max_rounds_per_run: int = 100
    allowed_models: tuple[str, ...] = ("mlp", "cnn", "linear")
    allowed_projects: tuple[str, ...] = ("*",)
    allow_export: bool = False

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> ConfigError:
            section, key = _LAYOUT[name]
            return ConfigError(
                f"Invalid site policy: [{section}] {key} {rule}, got {getattr(self, name)!r}."
            )

        for name in ("max_total_epsilon", "max_run_epsilon"):
            value = getattr(self, name)
            if not (isinstance(value, float) and math.isfinite(value) and value > 0):
                raise bad(name, "must be a positive number")
        if self.max_run_epsilon > self.max_total_epsilon:
            raise bad("max_run_epsilon", "must not exceed max-total-epsilon")
        if not 0 < self.max_delta < 1:
            raise bad("max_delta", "must be in (0, 1)")
        if not (math.isfinite(self.min_noise_multiplier) and self.min_noise_multiplier >= 0):
            raise bad("min_noise_multiplier", "must be a number >= 0")
        if self.max_rounds_per_run < 1:
            raise bad("max_rounds_per_run", "must be >= 1")
        unknown = sorted(set(self.allowed_models) - set(MODELS))
        if not self.allowed_models or unknown:
            raise bad("allowed_models", f"must list models from {sorted(MODELS)}")
        if not self.allowed_projects or not all(p.strip() for p in self.allowed_projects):
            raise bad("allowed_projects", 'must list project names or "*"')

    @classmethod
    def load(cls, path: Path) -> SitePolicy:
        """Read a policy file; a missing, malformed or invalid file is a ConfigError."""
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(
                f"No site policy at {path}. `fedvault site init` writes one with safe defaults."
            ) from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"Site policy {path} is not valid TOML: {e}.") from e
        return cls.from_document(doc, source=str(path))

    @classmethod
    def from_document(cls, doc: dict[str, Any], *, source: str = "site policy") -> SitePolicy:
        by_key = {(section, key): name for name, (section, key) in _LAYOUT.items()}
        sections = {section for section, _ in by_key}
        values: dict[str, Any] = {}
        for section, table in doc.items():
            if section not in sections or not isinstance(table, dict):
                raise ConfigError(
                    f"{source}: unknown section [{section}]; sections are {sorted(sections)}."
                )
            for key, value in table.items():
                name = by_key.get((section, key))
                if name is None:
                    known = sorted(k for s, k in by_key if s == section)
                    raise ConfigError(
                        f"{source}: unknown key {key!r} in [{section}]; known: {known}."
                    )
                values[name] = _cast(section, key, value, _default_type(name))
        try:
            return cls(**values)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    def check_run(self, settings: RunSettings, *, server_round: int) -> None:
        """Refuse a round whose run this policy does not allow (before any training)."""
        if settings.model not in self.allowed_models:
            raise PolicyRefused(
                f"this site's policy allows models {list(self.allowed_models)}, "
                f"not {settings.model!r}"
            )
        if "*" not in self.allowed_projects and settings.project not in self.allowed_projects:
            raise PolicyRefused(
                f"this site's policy does not allow runs of project {settings.project!r}"
            )
        if server_round > self.max_rounds_per_run:
            raise PolicyRefused(
                f"round {server_round} exceeds this site's limit of "
                f"{self.max_rounds_per_run} rounds per run"
            )

    def check_round(self, *, noise_multiplier: float, delta: float) -> None:
        """Refuse DP parameters outside this policy's bounds."""
        if noise_multiplier < self.min_noise_multiplier:
            raise PolicyRefused(
                f"noise multiplier {noise_multiplier:.3f} is below this site's minimum "
                f"{self.min_noise_multiplier:g}"
            )
        if delta > self.max_delta:
            raise PolicyRefused(f"delta {delta:.2e} exceeds this site's maximum {self.max_delta:g}")


def _default_type(name: str) -> type:
    return {f.name: type(f.default) for f in fields(SitePolicy)}[name]


def _cast(section: str, key: str, value: Any, kind: type) -> Any:
    where = f"[{section}] {key}"
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is bool and isinstance(value, bool):
        return value
    if kind is tuple and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    wanted = {
        float: "a number",
        int: "an integer",
        bool: "true or false",
        tuple: "a list of strings",
    }
    raise ConfigError(f"Invalid site policy: {where} must be {wanted[kind]}, got {value!r}.")
