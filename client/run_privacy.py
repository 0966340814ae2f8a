"""A site's privacy spend within one run, kept in Flower's per-run ``context.state``.

A ClientApp process is fresh for every message, so the steps taken in earlier rounds live
in ``context.state`` (held by the SuperNode for the whole run). Epsilon is always the
composition of *every* recorded step, never a per-round figure.
"""

from __future__ import annotations

from dataclasses import dataclass

from flwr.app import ConfigRecord, RecordDict

from fedvault.common.privacy import PrivacyStep

__all__ = ["RunPrivacy"]

_KEY = "fedvault-privacy"


@dataclass
class RunPrivacy:
    """The noise fixed for this run and the DP-SGD steps taken so far."""

    noise_multiplier: float | None
    history: list[PrivacyStep]

    @classmethod
    def load(cls, state: RecordDict) -> RunPrivacy:
        if _KEY not in state.config_records:
            return cls(noise_multiplier=None, history=[])
        rec = state.config_records[_KEY]
        noise = [float(v) for v in rec["noise"]]  # type: ignore[union-attr]
        rates = [float(v) for v in rec["rate"]]  # type: ignore[union-attr]
        steps = [int(v) for v in rec["steps"]]  # type: ignore[union-attr]
        fixed = float(rec["fixed-noise"])  # type: ignore[arg-type]
        history = [PrivacyStep(n, r, s) for n, r, s in zip(noise, rates, steps, strict=True)]
        return cls(noise_multiplier=fixed or None, history=history)

    def save(self, state: RecordDict) -> None:
        state[_KEY] = ConfigRecord(
            {
                "fixed-noise": float(self.noise_multiplier or 0.0),
                "noise": [s.noise_multiplier for s in self.history],
                "rate": [s.sample_rate for s in self.history],
                "steps": [s.steps for s in self.history],
            }
        )

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.history)
