"""Find events: filters, time windows, cursor pages in a stable order, and streams for export."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, TextClause, select, text
from sqlalchemy.engine import Engine

from fedvault.common.errors import ConfigError
from fedvault.server.audit._chain import EVENTS
from fedvault.server.audit.canonical import format_time, parse_time
from fedvault.server.audit.events import parse_outcome
from fedvault.server.audit.tables import UNALLOWED, Outcome

__all__ = [
    "MAX_PAGE",
    "EventFilter",
    "EventPage",
    "iter_events",
    "query_events",
    "seq_window",
]

MAX_PAGE = 1000
_TEXT = re.compile(r"[^\x00-\x1f\x7f]{1,256}")
_COLUMNS = tuple(c.name for c in EVENTS.columns)
_TEXT_FILTERS = ("actor", "action", "resource_type", "resource_id", "project")


@dataclass(frozen=True)
class EventFilter:
    """Which events to return; every field that is set must match (exactly).

    ``since`` is inclusive and ``until`` exclusive; both are timezone-aware.

    Raises:
        ConfigError: a value is empty or malformed, an outcome is unknown, a time has no
            timezone, or the window is empty.
    """

    actor: str | None = None
    action: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    project: str | None = None
    outcome: Outcome | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        for name in _TEXT_FILTERS:
            value = getattr(self, name)
            if value is not None and not (isinstance(value, str) and _TEXT.fullmatch(value)):
                raise ConfigError(
                    f"Invalid {name.replace('_', ' ')} filter {value!r}: give 1-256 "
                    "characters without control characters, or leave it out."
                )
        if self.outcome is not None:
            object.__setattr__(self, "outcome", parse_outcome(self.outcome))
        for name in ("since", "until"):
            when = getattr(self, name)
            if when is not None and (not isinstance(when, datetime) or when.tzinfo is None):
                raise ConfigError(f"Invalid {name} {when!r}: give a timezone-aware time.")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ConfigError(
                f"The time window is empty: since ({self.since.isoformat()}) must be before "
                f"until ({self.until.isoformat()})."
            )

    @classmethod
    def parse(
        cls, *, since: str | None = None, until: str | None = None, **values: Any
    ) -> EventFilter:
        """A filter from text (as typed in a shell or a query string)."""
        return cls(
            since=parse_time(since, name="since") if since else None,
            until=parse_time(until, name="until") if until else None,
            **{k: v for k, v in values.items() if v is not None},
        )


@dataclass(frozen=True)
class EventPage:
    """Up to ``limit`` events after the cursor, oldest first; ``next_cursor`` continues."""

    events: list[dict[str, Any]] = field(default_factory=list)
    next_cursor: str | None = None


def _first_at_or_after(conn: Connection, when: str, last: int) -> int:
    """The smallest seq whose time is at or after ``when`` (``last + 1`` if none).

    Times never decrease along seq, so this bisects the primary key.
    """
    lo, hi = 1, last + 1
    while lo < hi:
        mid = (lo + hi) // 2
        row = conn.execute(
            select(EVENTS.c.seq, EVENTS.c.time)
            .where(EVENTS.c.seq >= mid)
            .order_by(EVENTS.c.seq)
            .limit(1)
        ).first()
        if row is None or row[1] >= when:
            hi = mid
        else:
            lo = row[0] + 1
    return lo


def seq_window(conn: Connection, since: datetime | None, until: datetime | None) -> tuple[int, int]:
    """The half-open seq range ``[first, end)`` of the events inside a time window."""
    last = conn.execute(select(EVENTS.c.seq).order_by(EVENTS.c.seq.desc()).limit(1)).scalar()
    last = last or 0
    first = _first_at_or_after(conn, format_time(since), last) if since else 1
    end = _first_at_or_after(conn, format_time(until), last) if until else last + 1
    return first, end


def _conditions(conn: Connection, flt: EventFilter) -> list[ColumnElement[bool] | TextClause]:
    where: list[ColumnElement[bool] | TextClause] = []
    for name in _TEXT_FILTERS:
        value = getattr(flt, name)
        if value is not None:
            where.append(EVENTS.c[name] == value)
    if flt.outcome is not None:
        where.append(EVENTS.c.outcome == flt.outcome.value)
        if flt.outcome is not Outcome.ALLOWED:
            where.append(text(UNALLOWED))  # lets the database use the small partial index
    if flt.since is not None or flt.until is not None:
        first, end = seq_window(conn, flt.since, flt.until)
        where += [EVENTS.c.seq >= first, EVENTS.c.seq < end]
    return where


def parse_cursor(cursor: str | None) -> int:
    if cursor is None or cursor == "":
        return 0
    if not cursor.isdigit() or len(cursor) > 19:
        raise ConfigError(
            f"Invalid cursor {cursor!r}: pass back the next_cursor of the previous page."
        )
    return int(cursor)


def row_to_event(row: Any) -> dict[str, Any]:
    """A stored row as the JSON object exports and pages show (details parsed)."""
    event = dict(zip(_COLUMNS, row, strict=True))
    event["details"] = json.loads(event["details"])
    return event


def _select(where: list[ColumnElement[bool] | TextClause], after: int, limit: int) -> Select[Any]:
    return (
        select(*EVENTS.columns)
        .where(*where, EVENTS.c.seq > after)
        .order_by(EVENTS.c.seq)
        .limit(limit)
    )


def query_events(
    engine: Engine, flt: EventFilter, *, cursor: str | None = None, limit: int = 100
) -> EventPage:
    """One page of matching events in sequence order (stable: events never change).

    Raises:
        ConfigError: ``cursor`` is not one this function returned, or ``limit`` is not
            between 1 and ``MAX_PAGE``.
    """
    if not 1 <= limit <= MAX_PAGE:
        raise ConfigError(f"Invalid page size {limit}: ask for 1 to {MAX_PAGE} events.")
    after = parse_cursor(cursor)
    with engine.connect() as conn:
        rows = conn.execute(_select(_conditions(conn, flt), after, limit + 1)).all()
    more = len(rows) > limit
    events = [row_to_event(r) for r in rows[:limit]]
    return EventPage(events, str(events[-1]["seq"]) if more else None)


def iter_events(
    engine: Engine, flt: EventFilter, *, chunk: int = 1000
) -> Iterator[tuple[Any, ...]]:
    """Every matching stored row, oldest first, read a chunk at a time (for exports)."""
    with engine.connect() as conn:
        where = _conditions(conn, flt)
        after = 0
        while True:
            rows = conn.execute(_select(where, after, chunk)).all()
            yield from (tuple(r) for r in rows)
            if len(rows) < chunk:
                return
            after = rows[-1][0]
