"""Queries on a seeded log return exactly the expected events, in a stable order, in pages;
bad filters, windows and cursors are clear errors."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import rfc8785
from sqlalchemy.engine import Engine

from fedvault.common.errors import ConfigError
from fedvault.server.audit import AuditLog, EventFilter, export_events, query_events
from tests.server.audit.factories import SEEDED, T0, event


def _seqs(engine: Engine, **filters: Any) -> list[int]:
    page = query_events(engine, EventFilter(**filters), limit=1000)
    assert page.next_cursor is None
    return [e["seq"] for e in page.events]


def _expected(**match: Any) -> list[int]:
    keys = ("actor", "action", "resource_type", "resource_id", "project", "outcome")
    return [
        i
        for i, row in enumerate(SEEDED, 1)
        if all(row[keys.index(k)] == v for k, v in match.items())
    ]


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"actor": "alice"},
        {"actor": "bob", "outcome": "denied"},
        {"action": "model.pull"},
        {"resource_type": "model", "resource_id": "credit-mlp:1"},
        {"project": "credit"},
        {"outcome": "failed"},
        {"outcome": "allowed", "project": "mnist"},
        {"actor": "nobody"},
    ],
)
def test_filters_return_exactly_the_matching_events(
    seeded: AuditLog, engine: Engine, filters: dict[str, str]
) -> None:
    assert _seqs(engine, **filters) == _expected(**filters)


@pytest.mark.parametrize(
    ("since", "until", "expected"),
    [
        (3, 6, [4, 5, 6]),  # minutes after T0: event N is at minute N - 1
        (None, 2, [1, 2]),
        (8, None, [9, 10]),
        (-60, 600, list(range(1, 11))),
        (100, None, []),
    ],
)
def test_time_windows_include_since_and_exclude_until(
    seeded: AuditLog,
    engine: Engine,
    since: int | None,
    until: int | None,
    expected: list[int],
) -> None:
    window = {
        "since": T0 + timedelta(minutes=since) if since is not None else None,
        "until": T0 + timedelta(minutes=until) if until is not None else None,
    }
    assert _seqs(engine, **window) == expected
    denied = [s for s in expected if SEEDED[s - 1][5] == "denied"]
    assert _seqs(engine, outcome="denied", **window) == denied


def test_pages_cover_every_event_once_in_order(seeded: AuditLog, engine: Engine) -> None:
    seen, cursor = [], None
    for _ in range(10):
        page = query_events(engine, EventFilter(action="model.pull"), cursor=cursor, limit=2)
        seen += [e["seq"] for e in page.events]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == _expected(action="model.pull")
    seeded.append(**event(actor="dave"))
    page = query_events(engine, EventFilter(action="model.pull"), cursor=str(seen[-1]))
    assert [e["actor"] for e in page.events] == ["dave"], "new events follow on the last page"


def test_events_come_back_whole(seeded: AuditLog, engine: Engine) -> None:
    (e,) = query_events(engine, EventFilter(actor="carol", outcome="failed")).events
    assert e == e | {
        "seq": 7,
        "time": "2025-03-01T09:06:00.000000Z",
        "actor": "carol",
        "actor_type": "user",
        "action": "model.pull",
        "resource_type": "model",
        "resource_id": "digits-cnn",
        "project": "mnist",
        "outcome": "failed",
        "policy": "policy-set:abc",
        "source": "10.0.0.7",
        "request_id": "req-7",
        "details": {"n": 7},
    }
    assert len(e["hash"]) == 64 and len(e["prev_hash"]) == 64


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"actor": ""}, "Invalid actor filter"),
        ({"resource_id": "a\x00b"}, "Invalid resource id filter"),
        ({"project": "p" * 300}, "Invalid project filter"),
        ({"outcome": "maybe"}, "Invalid outcome 'maybe': use one of allowed, denied, failed"),
        ({"since": datetime(2025, 3, 1)}, "timezone-aware"),
        ({"since": T0, "until": T0}, "time window is empty"),
        ({"since": T0 + timedelta(hours=1), "until": T0}, "time window is empty"),
    ],
)
def test_invalid_filters_say_what_is_wrong(filters: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        EventFilter(**filters)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ({"since": "last tuesday"}, "Invalid since 'last tuesday'"),
        ({"until": "2025-03-01T10:00"}, "no timezone"),
        ({"since": "2025-03-02", "until": "2025-03-01"}, "time window is empty"),
    ],
)
def test_invalid_windows_as_text_say_what_is_wrong(text: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        EventFilter.parse(**text)


def test_invalid_cursors_and_page_sizes_are_refused(seeded: AuditLog, engine: Engine) -> None:
    for cursor in ("abc", "-1", "1" * 30):
        with pytest.raises(ConfigError, match="Invalid cursor"):
            query_events(engine, EventFilter(), cursor=cursor)
    for limit in (0, 1001):
        with pytest.raises(ConfigError, match="Invalid page size"):
            query_events(engine, EventFilter(), limit=limit)


def test_jsonl_export_is_every_match_and_rehashes(seeded: AuditLog, engine: Engine) -> None:
    text = "".join(export_events(engine, EventFilter(project="mnist"), fmt="jsonl"))
    events = [json.loads(line) for line in text.splitlines()]
    assert [e["seq"] for e in events] == _expected(project="mnist")
    for e in events:
        body = {k: v for k, v in e.items() if k not in ("prev_hash", "hash")}
        leaf = hashlib.sha256(b"\x00" + bytes.fromhex(e["prev_hash"]) + rfc8785.dumps(body))
        assert leaf.hexdigest() == e["hash"], "an export can be re-verified on its own"


def test_csv_export_has_a_header_and_one_row_per_event(seeded: AuditLog, engine: Engine) -> None:
    text = "".join(export_events(engine, EventFilter(outcome="denied"), fmt="csv"))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [int(r["seq"]) for r in rows] == _expected(outcome="denied")
    assert json.loads(rows[0]["details"]) == {"n": 2}
    assert rows[0]["project"] == "mnist" and rows[-1]["project"] == ""


def test_export_of_an_empty_match_and_a_bad_format(seeded: AuditLog, engine: Engine) -> None:
    assert "".join(export_events(engine, EventFilter(actor="nobody"))) == ""
    header = "".join(export_events(engine, EventFilter(actor="nobody"), fmt="csv"))
    assert header.startswith("seq,time,actor")
    with pytest.raises(ConfigError, match="Invalid export format 'xml'"):
        export_events(engine, EventFilter(), fmt="xml")


def test_window_bounds_accept_any_timezone(seeded: AuditLog, engine: Engine) -> None:
    plus_two = timezone(timedelta(hours=2))
    since = (T0 + timedelta(minutes=8)).astimezone(plus_two)
    assert since.hour == 11
    assert _seqs(engine, since=since) == [9, 10]
