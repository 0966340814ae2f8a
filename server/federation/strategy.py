"""FedAvg that validates every update, bounds every wait, and keeps per-site privacy figures."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedvault.common.errors import FederationError, UpdateRejected
from fedvault.common.protocol import ARRAYS, METRICS, SITE, ReplyError
from fedvault.server.federation.validation import to_numpy, validate_update

__all__ = [
    "RoundLog",
    "ValidatingFedAvg",
    "aggregate_site_metrics",
    "site_name",
    "wait_for_sites",
    "weighted_average",
]

log = logging.getLogger("fedvault.server")


def wait_for_sites(grid: Grid, *, minimum: int, timeout: float, poll: float = 1.0) -> list[int]:
    """Wait until ``minimum`` sites are connected; raise FederationError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = list(grid.get_node_ids())
        if len(nodes) >= minimum:
            return nodes
        if time.monotonic() >= deadline:
            raise FederationError(
                f"Only {len(nodes)} of the {minimum} required sites connected within "
                f"{timeout:g} s. Check that the sites are running, trust this server's CA, "
                "and that their node keys are registered; or lower min-sites."
            )
        time.sleep(poll)


def site_name(content: RecordDict, node_id: int) -> str:
    site = content.config_records.get(SITE)
    return str(site["name"]) if site is not None and "name" in site else f"node-{node_id}"


def _number(metrics: MetricRecord, key: str) -> float:
    value = metrics[key]
    if isinstance(value, list):
        raise UpdateRejected(f"metric {key!r} must be a single number")
    return float(value)


def aggregate_site_metrics(records: list[RecordDict], weighting_key: str) -> MetricRecord:
    """Weighted means of losses and accuracies; the worst (largest) epsilon and delta."""
    metrics = [r.metric_records[METRICS] for r in records]
    total = sum(_number(m, weighting_key) for m in metrics)
    out: dict[str, Any] = {weighting_key: int(total)}
    keys: set[str] = set().union(*(m.keys() for m in metrics))
    for key in sorted(keys - {weighting_key}):
        values = [(_number(m, key), _number(m, weighting_key)) for m in metrics]
        if key in ("epsilon", "delta"):
            out[f"max-{key}"] = max(v for v, _ in values)
        elif key.endswith(("loss", "accuracy")):
            out[key] = sum(v * w for v, w in values) / total if total else float("nan")
    return MetricRecord(out)


@dataclass
class RoundLog:
    """What happened to each site's reply in one round."""

    round: int
    sites: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)


class ValidatingFedAvg(FedAvg):
    """FedAvg weighted by examples, with update validation and a bounded wait for sites."""

    def __init__(
        self,
        *,
        min_sites: int,
        wait_timeout: float,
        max_update_norm: float,
        fraction_evaluate: float,
    ):
        super().__init__(
            fraction_train=1.0,
            fraction_evaluate=fraction_evaluate,
            min_train_nodes=min_sites,
            min_evaluate_nodes=min_sites if fraction_evaluate > 0 else 0,
            min_available_nodes=min_sites,
            weighted_by_key="num-examples",
            arrayrecord_key=ARRAYS,
            train_metrics_aggr_fn=aggregate_site_metrics,
            evaluate_metrics_aggr_fn=aggregate_site_metrics,
        )
        self.min_sites = min_sites
        self.wait_timeout = wait_timeout
        self.max_update_norm = max_update_norm
        self.rounds: dict[int, RoundLog] = {}
        self._reference: dict[str, Any] = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        wait_for_sites(grid, minimum=self.min_sites, timeout=self.wait_timeout)
        self._reference = to_numpy(arrays)
        return super().configure_train(server_round, arrays, config, grid)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self.fraction_evaluate == 0.0:
            return []
        wait_for_sites(grid, minimum=self.min_sites, timeout=self.wait_timeout)
        return super().configure_evaluate(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        entry = self.rounds.setdefault(server_round, RoundLog(server_round))
        accepted: list[tuple[RecordDict, dict[str, np.ndarray]]] = []
        for msg in replies:
            node = msg.metadata.src_node_id
            if msg.has_error():
                reason = msg.error.reason or f"error code {msg.error.code}"
                if msg.error.code == ReplyError.REFUSED:
                    log.info("Round %d: node %d refused: %s", server_round, node, reason)
                    entry.refused.append({"node": node, "reason": reason})
                else:
                    log.warning("Round %d: node %d failed: %s", server_round, node, reason)
                    entry.failed.append({"node": node, "code": msg.error.code, "reason": reason})
                continue
            name = site_name(msg.content, node)
            try:
                arrays = self._check_reply(msg.content)
            except UpdateRejected as e:
                log.warning("Round %d: update from %s dropped: %s", server_round, name, e)
                entry.rejected.append({"site": name, "node": node, "reason": str(e)})
                continue
            accepted.append((msg.content, arrays))
            metrics = msg.content.metric_records[METRICS]
            entry.sites.append({"site": name, "node": node, **dict(metrics.items())})
        if not accepted:
            log.warning("Round %d: no valid update; the global model is unchanged.", server_round)
            return None, None
        weights = [_number(c.metric_records[METRICS], "num-examples") for c, _ in accepted]
        averaged = weighted_average([a for _, a in accepted], weights)
        metrics = aggregate_site_metrics([c for c, _ in accepted], "num-examples")
        return ArrayRecord({k: Array(v) for k, v in averaged.items()}), metrics

    def _check_reply(self, content: RecordDict) -> dict[str, np.ndarray]:
        metrics = content.metric_records.get(METRICS)
        if metrics is None or "num-examples" not in metrics:
            raise UpdateRejected("reply carries no num-examples metric")
        weight = metrics["num-examples"]
        if not isinstance(weight, int | float) or isinstance(weight, bool) or not weight > 0:
            raise UpdateRejected(f"num-examples must be a positive number, got {weight!r}")
        bad = [k for k, v in metrics.items() if not isinstance(v, int | float)]
        if bad:
            raise UpdateRejected(f"metrics {bad} are not single numbers")
        _check_privacy_metrics(metrics)
        if list(content.array_records) != [ARRAYS]:
            raise UpdateRejected(
                f"expected exactly one ArrayRecord {ARRAYS!r}, got {list(content.array_records)}"
            )
        return validate_update(self._reference, content[ARRAYS], max_norm=self.max_update_norm)  # type: ignore[arg-type]


_PRIVACY_RULES: dict[str, tuple[str, Any]] = {
    "epsilon": ("a finite number >= 0", lambda v: math.isfinite(v) and v >= 0),
    "delta": ("in (0, 1)", lambda v: 0 < v < 1),
    "noise-multiplier": ("a finite number > 0", lambda v: math.isfinite(v) and v > 0),
    "sample-rate": ("in (0, 1]", lambda v: 0 < v <= 1),
    "steps": ("a whole number >= 0", lambda v: float(v).is_integer() and v >= 0),
}


def _check_privacy_metrics(metrics: MetricRecord) -> None:
    """Every update must say what it cost: the lineage recomputes epsilon from these."""
    for key, (rule, ok) in _PRIVACY_RULES.items():
        if key not in metrics:
            raise UpdateRejected(f"reply lacks the privacy metric {key!r}")
        if not ok(float(metrics[key])):  # type: ignore[arg-type]
            raise UpdateRejected(f"privacy metric {key!r} must be {rule}, got {metrics[key]!r}")


def weighted_average(
    updates: list[dict[str, np.ndarray]], weights: list[float]
) -> dict[str, np.ndarray]:
    """Average validated updates weighted by example counts, accumulating in float64."""
    total = sum(weights)
    out: dict[str, np.ndarray] = {}
    for key, ref in updates[0].items():
        acc = np.zeros(ref.shape, dtype=np.float64)
        for update, weight in zip(updates, weights, strict=True):
            acc += update[key].astype(np.float64) * (weight / total)
        out[key] = acc.astype(ref.dtype)
    return out
