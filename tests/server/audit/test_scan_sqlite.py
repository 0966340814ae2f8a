"""SQLite's fast verification path confirms exactly the stretches the general scan finds
intact, with the same result, and gives up on every damaged one."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.engine import Engine

from fedvault.server.audit import AuditLog, SigningKey, _scan, verify_log
from fedvault.server.audit._scan import Scan, scan
from fedvault.server.audit._scan_sqlite import scan_sqlite, sqlite_file
from fedvault.server.audit.canonical import event_json
from fedvault.server.audit.merkle import CompactRange
from fedvault.server.core.db import open_database
from tests.server.audit.factories import drop_triggers, event

EVENTS = 30
BOUNDARIES = frozenset({4, 8, 12, 16, 20, 24, 28, 30})
STRETCHES = [(0, None), (0, 16), (16, None), (8, 12), (28, None), (30, None), (0, 7)]


@pytest.fixture
def sqlite_log(tmp_path: Path, signing_key: SigningKey) -> Iterator[Engine]:
    """A closed, intact SQLite log of 30 events (some fields null, odd text in others)."""
    engine = open_database(f"sqlite:///{tmp_path / 'audit.db'}")
    log = AuditLog(engine=engine, signing_key=signing_key, checkpoint_every=4)
    for i in range(1, EVENTS + 1):
        log.append(
            **event(
                project=None if i % 3 == 0 else "mnist",
                policy=None if i % 4 == 0 else "p",
                request_id=None if i % 5 == 0 else f'r"{i}\\',
                source=None if i % 7 == 0 else "10.0.0.1",
                resource_id=f"model é€𝄞 {i}",
                details={"i": i, "note": "tab\t nl\n ctl\x01", "ratio": i / 8},
            )
        )
    log.close()
    yield engine
    engine.dispose()


def _fast(engine: Engine, start: int, end: int | None) -> Scan | None:
    path = sqlite_file(engine.url)
    assert path is not None
    result = Scan(start, CompactRange())
    return result if scan_sqlite(path, result, end=end, boundaries=BOUNDARIES) else None


def _same(fast: Scan, general: Scan) -> None:
    assert general.problem is None
    assert (fast.start, fast.events, fast.joined) == (general.start, general.events, False)
    assert fast.tree.nodes == general.tree.nodes
    assert {b: t.nodes for b, t in fast.trees.items()} == {
        b: t.nodes for b, t in general.trees.items()
    }
    assert (fast.first_prev, fast.first_time) == (general.first_prev, general.first_time)
    assert (fast.last_hash, fast.last_time) == (general.last_hash, general.last_time)


@pytest.mark.parametrize(("start", "end"), STRETCHES)
def test_an_intact_stretch_gives_what_the_general_scan_gives(
    sqlite_log: Engine, start: int, end: int | None
) -> None:
    fast = _fast(sqlite_log, start, end)
    assert fast is not None, "the fast path gave up on an intact stretch"
    _same(fast, scan(sqlite_log, start=start, end=end, boundaries=BOUNDARIES))


def test_an_intact_sqlite_log_verifies_without_the_general_scan(
    sqlite_log: Engine, signing_key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_: object, **__: object) -> Scan:
        raise AssertionError("the general scan ran on an intact SQLite log")

    monkeypatch.setattr(_scan, "scan", refuse)
    report = verify_log(sqlite_log, signing_key.public, workers=1, stretch=8)
    assert report.ok and report.events == EVENTS and report.signed_size == EVENTS


BEFORE, AFTER = (0, 8), (16, None)


@pytest.mark.parametrize(
    ("change", "intact"),
    [
        ("UPDATE audit_events SET actor = 'mallory' WHERE seq = 13", [BEFORE, AFTER]),
        ("UPDATE audit_events SET project = NULL WHERE seq = 13", [BEFORE, AFTER]),
        ("UPDATE audit_events SET project = 'null' WHERE seq = 12", [BEFORE, AFTER]),
        ("UPDATE audit_events SET details = '{\"i\": 13}' WHERE seq = 13", [BEFORE, AFTER]),
        (
            "UPDATE audit_events SET time = '2000-01-01T00:00:00Z' WHERE seq = 13",
            [BEFORE, AFTER],
        ),
        ("UPDATE audit_events SET prev_hash = hash WHERE seq = 13", [BEFORE, AFTER]),
        ("UPDATE audit_events SET hash = upper(hash) WHERE seq = 13", [BEFORE, AFTER]),
        ("UPDATE audit_events SET actor = CAST(actor AS BLOB) WHERE seq = 13", [BEFORE, AFTER]),
        ("UPDATE audit_events SET time = 7 WHERE seq = 13", [BEFORE, AFTER]),
        ("UPDATE audit_events SET prev_hash = 'zz' WHERE seq = 9", [BEFORE, AFTER]),
        ("DELETE FROM audit_events WHERE seq = 13", [BEFORE, AFTER]),
        ("UPDATE audit_events SET seq = 99 WHERE seq = 13", [BEFORE]),  # moved past the end
        ("UPDATE audit_events SET seq = 0 WHERE seq = 9", [AFTER]),  # moved before the first
    ],
)
def test_a_damaged_stretch_is_left_to_the_general_scan(
    sqlite_log: Engine, signing_key: SigningKey, change: str, intact: list[tuple[int, int | None]]
) -> None:
    drop_triggers(sqlite_log)
    with sqlite_log.begin() as conn:
        conn.execute(text(change))
    assert _fast(sqlite_log, 8, 16) is None
    for start, end in intact:
        assert _fast(sqlite_log, start, end) is not None, "other stretches still hold"
    assert not verify_log(sqlite_log, signing_key.public, workers=1, stretch=8).ok


def test_only_plain_sqlite_files_take_the_fast_path(tmp_path: Path) -> None:
    from sqlalchemy.engine import make_url

    assert sqlite_file(make_url(f"sqlite:///{tmp_path}/a.db")) == f"{tmp_path}/a.db"
    assert sqlite_file(make_url("sqlite://")) is None
    assert sqlite_file(make_url("sqlite:///:memory:")) is None
    assert sqlite_file(make_url(f"sqlite:///file:{tmp_path}/a.db?mode=ro&uri=true")) is None
    assert sqlite_file(make_url("postgresql+psycopg://u@127.0.0.1/test")) is None


def test_a_missing_file_is_not_created(tmp_path: Path) -> None:
    result = Scan(0, CompactRange())
    assert not scan_sqlite(str(tmp_path / "gone.db"), result, end=None, boundaries=frozenset())
    assert not (tmp_path / "gone.db").exists()


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_ROWS = st.lists(
    st.tuples(
        _TEXT,  # actor
        _TEXT,  # action
        _TEXT,  # resource id
        st.none() | _TEXT,  # project
        st.none() | _TEXT,  # policy
        st.none() | _TEXT,  # source
        st.none() | _TEXT,  # request id
        st.sampled_from(["{}", '{"n":1}', '{"note":"\\u0001 é"}']),  # details (canonical)
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(rows=_ROWS)
def test_the_inline_json_is_event_json_for_any_text(rows: list[tuple]) -> None:  # type: ignore[type-arg]
    """Rows hashed with ``event_json`` (quotes, escapes, control characters, any script,
    nulls) are confirmed by the fast path, which writes that JSON inline."""
    with tempfile.TemporaryDirectory() as tmp:
        engine = open_database(f"sqlite:///{tmp}/audit.db")
        prev = bytes(32)
        with engine.begin() as conn:
            for seq, (
                actor,
                action,
                rid,
                project,
                policy,
                source,
                request_id,
                details,
            ) in enumerate(rows, 1):
                fields = (seq, "2025-01-01T00:00:00.000000Z", actor, "user", action, "model")
                fields += (rid, project, "allowed", policy, source, request_id, details)
                digest = hashlib.sha256(b"\x00" + prev + event_json(*fields).encode()).digest()
                conn.execute(
                    text(
                        "INSERT INTO audit_events VALUES (:s, :t, :a, :at, :ac, :rt, :ri, :p,"
                        " :o, :po, :so, :rq, :d, :prev, :h)"
                    ),
                    dict(
                        zip(
                            (
                                "s",
                                "t",
                                "a",
                                "at",
                                "ac",
                                "rt",
                                "ri",
                                "p",
                                "o",
                                "po",
                                "so",
                                "rq",
                                "d",
                            ),
                            fields,
                            strict=True,
                        )
                    )
                    | {"prev": prev.hex(), "h": digest.hex()},
                )
                prev = digest
        try:
            fast = _fast(engine, 0, None)
            assert fast is not None, "the fast path refused rows event_json hashed"
            _same(fast, scan(engine, start=0, end=None, boundaries=BOUNDARIES))
        finally:
            engine.dispose()
