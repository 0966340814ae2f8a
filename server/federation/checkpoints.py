"""Where a run starts (fresh, from a stored version, resumed) and what a checkpoint records."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord

from fedvault.common.errors import ConfigError, FederationError
from fedvault.common.privacy import PrivacyStep, epsilon_spent
from fedvault.common.run_config import RunSettings
from fedvault.server.federation.strategy import RoundLog
from fedvault.server.federation.validation import to_numpy
from fedvault.server.store.service import Lineage, ModelStore, parse_ref
from fedvault.server.store.tables import ModelVersionPublic

__all__ = ["SitePrivacy", "StartingPoint", "starting_point"]

log = logging.getLogger("fedvault.server")

_DP_KEYS = ("max-grad-norm", "noise-multiplier", "target-epsilon", "target-delta", "accountant")


@dataclass
class StartingPoint:
    """The weights round ``first_round`` starts from, and the version they came from."""

    arrays: ArrayRecord
    first_round: int
    parent: tuple[str, int] | None = None
    resumed: bool = False
    sites: dict[str, SitePrivacy] = field(default_factory=dict)


@dataclass
class SitePrivacy:
    """One site's DP steps over the run (including before a resume) and their epsilon.

    Epsilon is recomputed here from the recorded (noise, sample rate, steps) with a fresh
    accountant, so the stored figure covers the whole run even when the site's own process
    was restarted in between.
    """

    site: str
    node: str = ""
    delta: float = 0.0
    history: list[list[float]] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)
    reported_epsilon: float = 0.0
    allow_export: bool | None = None

    def add_round(self, server_round: int, metrics: Mapping[str, Any]) -> None:
        self.rounds.append(server_round)
        self.delta = float(metrics.get("delta", self.delta))
        self.reported_epsilon = float(metrics.get("epsilon", 0.0))
        allowed = bool(metrics.get("allow-export", 0))
        # Export is allowed only if the site allowed it in every round it contributed to.
        self.allow_export = allowed if self.allow_export is None else self.allow_export and allowed
        self.history.append(
            [
                float(metrics.get("noise-multiplier", 0.0)),
                float(metrics.get("sample-rate", 0.0)),
                int(metrics.get("steps", 0)),
            ]
        )

    def to_record(self, accountant: str) -> dict[str, Any]:
        steps = [PrivacyStep(s[0], s[1], int(s[2])) for s in self.history if s[0] > 0]
        epsilon = epsilon_spent(steps, delta=self.delta, accountant=accountant) if steps else 0.0
        return {
            "site": self.site,
            "node": self.node,
            "epsilon": epsilon,
            "reported-epsilon": self.reported_epsilon,
            "delta": self.delta,
            "rounds": self.rounds,
            "steps": int(sum(s[2] for s in self.history)),
            "history": self.history,
            "allow-export": bool(self.allow_export),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> SitePrivacy:
        return cls(
            site=str(record["site"]),
            node=str(record.get("node", "")),
            delta=float(record.get("delta", 0.0)),
            history=[list(h) for h in record.get("history", [])],
            rounds=[int(r) for r in record.get("rounds", [])],
            reported_epsilon=float(record.get("reported-epsilon", 0.0)),
            allow_export=bool(record.get("allow-export", False)),
        )


def record_round(sites: dict[str, SitePrivacy], entry: RoundLog) -> None:
    """Add a round's accepted replies to each site's record.

    Sites are keyed by the name they report, but a name is bound to the first
    authenticated node that uses it in this server process: another node reporting the same
    name gets its own record (``name@node-N``) instead of being merged into it.
    """
    for reply in entry.sites:
        name, node = str(reply["site"]), str(reply["node"])
        key = name
        known = sites.get(key)
        if known is not None and known.node and known.node != node:
            key = f"{name}@node-{node}"
        record = sites.setdefault(key, SitePrivacy(site=key, node=node))
        record.node = record.node or node
        record.add_round(entry.round, reply)


def lineage_for(
    settings: RunSettings,
    *,
    run_id: str,
    server_round: int,
    sites: dict[str, SitePrivacy],
    metrics: Mapping[str, Any] | None,
    parent: tuple[str, int] | None,
) -> Lineage:
    config = settings.to_run_config()
    return Lineage(
        run_id=run_id,
        round=server_round,
        sites=[s.to_record(settings.accountant) for s in sites.values()],
        dp={k: config[k] for k in _DP_KEYS},
        metrics={k: float(v) for k, v in (metrics or {}).items()},
        config=dict(config),
        parent=parent,
    )


def _matching(
    fresh: ArrayRecord, stored: dict[str, np.ndarray], version: ModelVersionPublic
) -> ArrayRecord:
    expected = to_numpy(fresh)
    shapes = {k: v.shape for k, v in expected.items()}
    if {k: v.shape for k, v in stored.items()} != shapes:
        raise ConfigError(
            f"{version.ref} does not hold weights of this run's model (its arrays differ in "
            "names or shapes); start from a version of the same model, or a fresh run."
        )
    return ArrayRecord({k: Array(stored[k].astype(expected[k].dtype)) for k in expected})


def starting_point(
    store: ModelStore, settings: RunSettings, *, run_id: str, fresh: ArrayRecord
) -> StartingPoint:
    """Resume ``run_id`` from its newest stored round, or start from ``init-from``, or fresh.

    Raises:
        FederationError: the run already stored its final round.
        ConfigError: ``init-from`` names a missing version or one of another model.
    """
    model_id = settings.stored_model_name
    if settings.run_name:
        last = store.latest_of_run(model_id, run_id)
        if last is not None:
            if (last.round or 0) >= settings.num_server_rounds:
                raise FederationError(
                    f"Run {run_id!r} already finished: {last.ref} holds its round "
                    f"{last.round} of {settings.num_server_rounds}. Choose a new run-name."
                )
            arrays = _matching(fresh, store.load_arrays(model_id, last.version), last)
            log.info("Resuming run %s after round %s from %s", run_id, last.round, last.ref)
            # Node ids change when the federation restarts: names re-bind on first use.
            sites = {s["site"]: replace(SitePrivacy.from_record(s), node="") for s in last.sites}
            return StartingPoint(
                arrays, (last.round or 0) + 1, (model_id, last.version), True, sites
            )
    if settings.init_from:
        ref_id, ref_version = parse_ref(settings.init_from)
        base = store.get(ref_id, ref_version)
        arrays = _matching(fresh, store.load_arrays(ref_id, base.version), base)
        return StartingPoint(arrays, 1, (ref_id, base.version))
    return StartingPoint(fresh, 1)
