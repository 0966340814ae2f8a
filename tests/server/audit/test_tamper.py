"""Tampering with the database, as an intruder with full access would: verify names the first
bad event or the checkpoint that fails, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from functools import partial

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from fedvault.server.audit import AuditLog, Checkpoint, SigningKey, VerifyReport, verify_log
from fedvault.server.audit.canonical import EVENT_COLUMNS, event_json
from tests.server.audit.factories import drop_triggers, event

EVENTS = 40
EVERY = 8  # checkpoints at 8, 16, 24, 32, 40


@pytest.fixture(autouse=True, params=["one pass", "parallel"])
def _passes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every case twice: rehashed in one pass, and split into stretches of 16 events
    rehashed by two worker processes (checkpoints fall inside stretches and on their
    edges), which must name the same event or checkpoint."""
    if request.param == "parallel":
        monkeypatch.setattr(
            sys.modules[__name__], "verify_log", partial(verify_log, workers=2, stretch=16)
        )


@pytest.fixture
def log40(make_log: Callable[..., AuditLog], engine: Engine, signing_key: SigningKey) -> Engine:
    """A closed, intact log of 40 events with a checkpoint every 8; triggers dropped."""
    log = make_log(checkpoint_every=EVERY)
    for i in range(1, EVENTS + 1):
        outcome = "denied" if i % 5 == 0 else "allowed"
        log.append(**event(outcome=outcome, request_id=f"r{i}", details={"i": i}))
    log.close()
    assert verify_log(engine, signing_key.public).ok
    drop_triggers(engine)
    return engine


def _sql(engine: Engine, *statements: str) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))


def _rows(conn: Connection, first: int) -> list[dict[str, object]]:
    columns = ", ".join((*EVENT_COLUMNS, "prev_hash", "hash"))
    result = conn.execute(
        text(f"SELECT {columns} FROM audit_events WHERE seq >= {first} ORDER BY seq")
    )
    return [dict(r._mapping) for r in result]


def _rechain(conn: Connection, first: int) -> None:
    """Recompute every hash from event ``first`` on, as a forger without the key would."""
    prev = bytes.fromhex(
        conn.execute(text(f"SELECT hash FROM audit_events WHERE seq = {first - 1}")).scalar_one()
    )
    for row in _rows(conn, first):
        body = event_json(*(row[c] for c in EVENT_COLUMNS)).encode()
        digest = hashlib.sha256(b"\x00" + prev + body).digest()
        conn.execute(
            text("UPDATE audit_events SET prev_hash = :p, hash = :h WHERE seq = :s"),
            {"p": prev.hex(), "h": digest.hex(), "s": row["seq"]},
        )
        prev = digest


def _verify(engine: Engine, key: SigningKey, trusted: Checkpoint | None = None) -> VerifyReport:
    report = verify_log(engine, key.public, trusted=trusted)
    assert not report.ok
    return report


@pytest.mark.parametrize(
    "change",
    [
        "outcome = 'allowed'",
        "actor = 'mallory'",
        "time = '2030-01-01T00:00:00.000000Z'",
        "details = '{\"i\"\\:999}'",  # (a backslash keeps text() from reading a bind)
        "details = '{\"i\": 15}'",  # same meaning, not the canonical text
        "policy = NULL",
        "hash = '" + "0" * 64 + "'",
    ],
)
def test_an_edited_event_is_named(log40: Engine, signing_key: SigningKey, change: str) -> None:
    _sql(log40, f"UPDATE audit_events SET {change} WHERE seq = 15")
    report = _verify(log40, signing_key)
    assert report.first_bad_event == 15 and "15" in str(report.problem)
    assert report.signed_size == 8, "checkpoints before the damage still hold"


def test_a_deleted_event_is_named(log40: Engine, signing_key: SigningKey) -> None:
    _sql(log40, "DELETE FROM audit_events WHERE seq = 21")
    report = _verify(log40, signing_key)
    assert report.first_bad_event == 21 and "missing" in str(report.problem)


def test_a_deleted_event_with_later_ones_renumbered_is_named(
    log40: Engine, signing_key: SigningKey
) -> None:
    _sql(log40, "DELETE FROM audit_events WHERE seq = 21")
    for seq in range(22, EVENTS + 1):
        _sql(log40, f"UPDATE audit_events SET seq = {seq - 1} WHERE seq = {seq}")
    report = _verify(log40, signing_key)
    assert report.first_bad_event == 21


def test_reordered_events_are_named(log40: Engine, signing_key: SigningKey) -> None:
    _sql(
        log40,
        "UPDATE audit_events SET seq = -1 WHERE seq = 11",
        "UPDATE audit_events SET seq = 11 WHERE seq = 12",
        "UPDATE audit_events SET seq = 12 WHERE seq = -1",
    )
    report = _verify(log40, signing_key)
    assert report.first_bad_event == 11


def test_an_inserted_event_is_named(log40: Engine, signing_key: SigningKey) -> None:
    for seq in range(EVENTS, 17, -1):
        _sql(log40, f"UPDATE audit_events SET seq = {seq + 1} WHERE seq = {seq}")
    with log40.begin() as conn:
        forged = _rows(conn, 17)[0] | {"seq": 18, "actor": "mallory", "request_id": "forged"}
        conn.execute(
            text(
                f"INSERT INTO audit_events ({', '.join(forged)}) "
                f"VALUES ({', '.join(':' + k for k in forged)})"
            ),
            forged,
        )
    report = _verify(log40, signing_key)
    assert report.first_bad_event == 18


def test_an_event_inserted_before_the_first_is_named(
    log40: Engine, signing_key: SigningKey
) -> None:
    with log40.begin() as conn:
        forged = _rows(conn, 1)[0] | {"seq": 0}
        conn.execute(
            text(
                f"INSERT INTO audit_events ({', '.join(forged)}) "
                f"VALUES ({', '.join(':' + k for k in forged)})"
            ),
            forged,
        )
    report = _verify(log40, signing_key)
    assert report.first_bad_event == 1 and "inserted" in str(report.problem)


def test_an_edit_hidden_by_recomputing_the_chain_fails_its_checkpoint(
    log40: Engine, signing_key: SigningKey
) -> None:
    with log40.begin() as conn:
        conn.execute(text("UPDATE audit_events SET outcome = 'allowed' WHERE seq = 20"))
        _rechain(conn, 20)
    report = _verify(log40, signing_key)
    assert report.failed_checkpoint == 24, "the first checkpoint that covers event 20"
    assert "between events 17 and 24" in str(report.problem)
    assert report.signed_size == 16


def test_truncating_the_newest_events_fails_the_checkpoint_that_covered_them(
    log40: Engine, signing_key: SigningKey
) -> None:
    _sql(log40, "DELETE FROM audit_events WHERE seq > 35")
    report = _verify(log40, signing_key)
    assert report.failed_checkpoint == 40 and report.first_bad_event == 36
    assert "removed" in str(report.problem)


def test_truncation_with_its_checkpoints_deleted_is_caught_by_a_saved_checkpoint(
    log40: Engine, signing_key: SigningKey
) -> None:
    with log40.connect() as conn:
        row = conn.execute(
            text(
                "SELECT tree_size, root, key_id, signature FROM audit_checkpoints "
                "ORDER BY tree_size DESC LIMIT 1"
            )
        ).one()
    saved = Checkpoint.from_note(
        Checkpoint(
            signing_key.public.origin,
            row[0],
            bytes.fromhex(row[1]),
            bytes.fromhex(row[2]),
            bytes.fromhex(row[3]),
        ).to_note()
    )
    _sql(
        log40,
        "DELETE FROM audit_events WHERE seq > 30",
        "DELETE FROM audit_checkpoints WHERE tree_size > 30",
    )
    assert verify_log(log40, signing_key.public).ok, "undetectable from inside the DB alone"
    report = _verify(log40, signing_key, trusted=saved)
    assert report.failed_checkpoint == 40 and report.first_bad_event == 31


def test_a_forged_checkpoint_is_named(log40: Engine, signing_key: SigningKey) -> None:
    forged = SigningKey.generate().sign(16, bytes(32))
    _sql(
        log40,
        "UPDATE audit_checkpoints SET signature = '"
        + forged.signature.hex()
        + "' WHERE tree_size = 16",
    )
    report = _verify(log40, signing_key)
    assert report.failed_checkpoint == 16 and "signature" in str(report.problem)


def test_a_checkpoint_with_an_altered_root_is_named(log40: Engine, signing_key: SigningKey) -> None:
    _sql(log40, "UPDATE audit_checkpoints SET root = '" + "ab" * 32 + "' WHERE tree_size = 32")
    report = _verify(log40, signing_key)
    assert report.failed_checkpoint == 32


def test_verifying_with_another_key_fails_at_the_first_checkpoint(log40: Engine) -> None:
    report = verify_log(log40, SigningKey.generate().public)
    assert not report.ok and report.failed_checkpoint == EVERY


ODD = 'quote" back\\slash tab\t nl\n ctl\x01\x1f del\x7f é € 𝄞 \u2028 \ufeff'


def test_events_with_any_printable_text_verify_and_their_edits_are_named(
    make_log: Callable[..., AuditLog], engine: Engine, signing_key: SigningKey
) -> None:
    """Quotes, escapes, non-ASCII and control characters in details and ids: intact, the
    log verifies; one character changed in one of them, that event is named."""
    log = make_log(checkpoint_every=4)
    for i in range(10):
        log.append(
            **event(
                resource_id=f'model é€𝄞 "{i}"',
                request_id=f"r\u2028{i}",
                details={"note": ODD, "n": i, "ratio": 0.25 + i, "nested": {"é": [ODD]}},
            )
        )
    log.close()
    assert verify_log(engine, signing_key.public).ok
    drop_triggers(engine)
    _sql(engine, "UPDATE audit_events SET resource_id = 'model é€𝄞 \"7\" ' WHERE seq = 7")
    report = _verify(engine, signing_key)
    assert report.first_bad_event == 7 and "altered" in str(report.problem)


def test_a_column_turned_into_bytes_is_named_not_a_crash(
    log40: Engine, signing_key: SigningKey
) -> None:
    if log40.dialect.name != "sqlite":
        pytest.skip("PostgreSQL columns keep their declared types")
    _sql(log40, "UPDATE audit_events SET actor = CAST(actor AS BLOB) WHERE seq = 12")
    report = _verify(log40, signing_key)
    assert report.first_bad_event == 12
