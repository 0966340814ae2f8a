"""Collect the sites' noisy feature sums before training and make the run's shared scaling."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedvault.common.errors import FederationError, UpdateRejected
from fedvault.common.feature_stats import SharedScaling, combine_feature_sums
from fedvault.common.protocol import CONFIG, METRICS, SCALING, STATS, ReplyError
from fedvault.common.run_config import RunSettings
from fedvault.server.federation.strategy import RoundLog, site_name

__all__ = ["collect_feature_stats", "scaling_record", "with_scaling"]

log = logging.getLogger("fedvault.server")


def scaling_record(scaling: SharedScaling) -> ArrayRecord:
    """The shared scaling as the ArrayRecord every train and evaluate message carries."""
    return ArrayRecord({"center": Array(np.asarray(scaling.center, dtype=np.float32))})


def with_scaling(messages: Iterable[Message], scaling: SharedScaling | None) -> list[Message]:
    """Add the run's shared scaling (when it has one) to each outgoing message."""
    out = list(messages)
    if scaling is not None:
        for msg in out:
            msg.content[SCALING] = scaling_record(scaling)
    return out


def _check(msg: Message) -> tuple[np.ndarray, int]:
    content = msg.content
    if STATS not in content.array_records or METRICS not in content.metric_records:
        raise UpdateRejected("reply carries no feature sum or metrics")
    total = content.array_records[STATS]["sum"].numpy().astype(np.float64).ravel()
    if not np.isfinite(total).all():
        raise UpdateRejected("feature sum is not finite")
    count = content.metric_records[METRICS].get("num-examples")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise UpdateRejected(f"num-examples must be a positive integer, got {count!r}")
    return total, count


def collect_feature_stats(
    grid: Grid, settings: RunSettings, nodes: list[int]
) -> tuple[SharedScaling, RoundLog]:
    """Ask every site for its noisy feature sum (round 0) and combine them.

    Returns the shared scaling and a round-0 log whose accepted entries carry each site's
    privacy metrics for the release, so the lineage composes it with the training rounds.

    Raises:
        FederationError: fewer than ``min-sites`` sites sent a usable sum.
    """
    messages = [
        Message(
            content=RecordDict({CONFIG: ConfigRecord({"server-round": 0})}),
            dst_node_id=node,
            message_type=MessageType.QUERY,
        )
        for node in nodes
    ]
    entry = RoundLog(0)
    sums: list[np.ndarray] = []
    counts: list[int] = []
    for msg in grid.send_and_receive(messages, timeout=settings.round_timeout):
        node = msg.metadata.src_node_id
        if msg.has_error():
            reason = msg.error.reason or f"error code {msg.error.code}"
            log.warning("Feature statistics: node %d did not contribute: %s", node, reason)
            target = entry.refused if msg.error.code == ReplyError.REFUSED else entry.failed
            target.append({"node": node, "code": msg.error.code, "reason": reason})
            continue
        name = site_name(msg.content, node)
        try:
            total, count = _check(msg)
        except UpdateRejected as e:
            entry.rejected.append({"site": name, "node": node, "reason": str(e)})
            continue
        sums.append(total)
        counts.append(count)
        metrics = dict(msg.content.metric_records[METRICS].items())
        entry.sites.append({"site": name, "node": node, **metrics})
    if len(sums) < settings.min_sites:
        raise FederationError(
            f"Only {len(sums)} of the {settings.min_sites} required sites released feature "
            "statistics; training does not start without a shared scaling."
        )
    if len({s.size for s in sums}) != 1:
        raise FederationError("Sites released feature sums of different sizes.")
    scaling = combine_feature_sums(sums, counts, transform=settings.feature_transform)
    log.info("Shared feature scaling from %d sites (%d examples)", len(sums), sum(counts))
    return scaling, entry
