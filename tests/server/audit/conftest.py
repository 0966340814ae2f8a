"""Audit fixtures: a fresh log on each database, and one holding a seeded history."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from fedvault.server.audit import AuditLog, SigningKey
from fedvault.server.core.db import open_database
from tests.server.audit.factories import SEEDED, FakeClock, event


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = open_database(db_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def make_log(engine: Engine, signing_key: SigningKey) -> Iterator[Callable[..., AuditLog]]:
    """Open logs on the test database; all are closed at the end."""
    opened: list[AuditLog] = []

    def make(**options: Any) -> AuditLog:
        log = AuditLog(engine=engine, signing_key=signing_key, **options)
        opened.append(log)
        return log

    yield make
    for log in opened:
        log.close()


@pytest.fixture
def seeded(make_log: Callable[..., AuditLog]) -> AuditLog:
    """A log holding SEEDED, one event a minute, checkpointed every 4 events."""
    log = make_log(checkpoint_every=4, clock=FakeClock())
    for i, (actor, action, rtype, rid, project, outcome) in enumerate(SEEDED, 1):
        log.append(
            **event(
                actor=actor,
                action=action,
                resource_type=rtype,
                resource_id=rid,
                project=project,
                outcome=outcome,
                request_id=f"req-{i}",
                details={"n": i},
            )
        )
    return log
