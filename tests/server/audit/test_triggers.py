"""The database itself refuses UPDATE and DELETE on the audit tables (and TRUNCATE on
PostgreSQL), for every client, not only for fedvault."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from fedvault.server.audit import AuditLog
from tests.server.audit.factories import event


@pytest.fixture
def filled(engine: Engine, make_log: Callable[..., AuditLog]) -> Engine:
    log = make_log()
    log.append(**event())
    log.close()
    return engine


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET actor = 'mallory'",
        "DELETE FROM audit_events",
        "UPDATE audit_checkpoints SET root = 'x'",
        "DELETE FROM audit_checkpoints",
    ],
)
def test_updates_and_deletes_are_refused(filled: Engine, statement: str) -> None:
    with pytest.raises(DBAPIError, match="append-only"), filled.begin() as conn:
        conn.execute(text(statement))
    with filled.connect() as conn:
        assert conn.execute(text("SELECT actor FROM audit_events")).scalar_one() == "alice"
        assert conn.execute(text("SELECT count(*) FROM audit_checkpoints")).scalar_one() == 1


def test_truncate_is_refused_on_postgres(filled: Engine) -> None:
    if filled.dialect.name != "postgresql":
        pytest.skip("SQLite has no TRUNCATE")
    for table in ("audit_events", "audit_checkpoints"):
        with pytest.raises(DBAPIError, match="append-only"), filled.begin() as conn:
            conn.execute(text(f"TRUNCATE {table} CASCADE"))


def test_inserts_are_still_allowed(filled: Engine, make_log: Callable[..., AuditLog]) -> None:
    make_log().append(**event(actor="bob"))
