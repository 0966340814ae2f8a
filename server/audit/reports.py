"""Compliance reports: who accessed a model, what a principal did, what was denied."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from sqlalchemy import Subquery, func, select, text, union_all
from sqlalchemy.engine import Engine

from fedvault.server.audit._chain import EVENTS
from fedvault.server.audit.query import EventFilter, seq_window
from fedvault.server.audit.tables import UNALLOWED, Outcome
from fedvault.server.store.service import parse_ref

__all__ = [
    "AccessRow",
    "ActivityRow",
    "DeniedRow",
    "actor_activity",
    "denied_actions",
    "who_accessed",
]

c = EVENTS.c


class AccessRow(NamedTuple):
    """One principal's dealings of one kind with a model (all its versions, or one)."""

    actor: str
    actor_type: str
    action: str
    outcome: str
    events: int
    first: str
    last: str


class ActivityRow(NamedTuple):
    action: str
    resource_type: str
    outcome: str
    events: int
    first: str
    last: str


class DeniedRow(NamedTuple):
    actor: str
    action: str
    resource_type: str
    resource_id: str
    policy: str | None
    events: int
    first: str
    last: str


def _model_events(model: str) -> Subquery:
    """Events on model ``ID`` (itself or any ``ID:N``), or on one version ``ID:N``."""
    columns = (c.seq, c.time, c.actor, c.actor_type, c.action, c.outcome)
    model_id, version = parse_ref(model)
    if version is not None:
        ref = f"{model_id}:{version}"
        return select(*columns).where(c.resource_type == "model", c.resource_id == ref).subquery()
    # Two index ranges joined, rather than an OR that planners may not split.
    return union_all(
        select(*columns).where(c.resource_type == "model", c.resource_id == model_id),
        select(*columns).where(
            c.resource_type == "model",
            c.resource_id >= f"{model_id}:",
            c.resource_id < f"{model_id};",
        ),
    ).subquery()


def who_accessed(engine: Engine, model: str) -> list[AccessRow]:
    """Every principal that acted on ``model`` (``ID`` or ``ID:VERSION``), by action.

    Raises:
        ConfigError: ``model`` is not a valid model reference.
    """
    events = _model_events(model).c
    columns = [events.actor, events.actor_type, events.action, events.outcome]
    query = (
        select(*columns, func.count(), func.min(events.time), func.max(events.time))
        .group_by(*columns)
        .order_by(func.min(events.seq))
    )
    with engine.connect() as conn:
        return [AccessRow._make(row) for row in conn.execute(query)]


def actor_activity(
    engine: Engine, actor: str, *, since: datetime | None = None, until: datetime | None = None
) -> list[ActivityRow]:
    """Everything ``actor`` did, summed by action, resource type and outcome.

    Raises:
        ConfigError: an invalid actor or time window.
    """
    flt = EventFilter(actor=actor, since=since, until=until)
    columns = [c.action, c.resource_type, c.outcome]
    with engine.connect() as conn:
        first, end = seq_window(conn, flt.since, flt.until)
        query = (
            select(*columns, func.count(), func.min(c.time), func.max(c.time))
            .where(c.actor == actor, c.seq >= first, c.seq < end)
            .group_by(*columns)
            .order_by(func.min(c.seq))
        )
        return [ActivityRow._make(row) for row in conn.execute(query)]


def denied_actions(
    engine: Engine, *, since: datetime | None = None, until: datetime | None = None
) -> list[DeniedRow]:
    """Denied actions in a time window (all time if open), by who, what, where and policy.

    Raises:
        ConfigError: an invalid time window.
    """
    flt = EventFilter(outcome=Outcome.DENIED, since=since, until=until)
    columns = [c.actor, c.action, c.resource_type, c.resource_id, c.policy]
    with engine.connect() as conn:
        first, end = seq_window(conn, flt.since, flt.until)
        query = (
            select(*columns, func.count(), func.min(c.time), func.max(c.time))
            .where(c.outcome == Outcome.DENIED.value, text(UNALLOWED))
            .where(c.seq >= first, c.seq < end)
            .group_by(*columns)
            .order_by(func.min(c.seq))
        )
        return [DeniedRow._make(row) for row in conn.execute(query)]
