"""Fixtures for the policy engine tests: a database holding the default policies."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy
from sqlmodel import Session

from fedvault.server.authz import store
from fedvault.server.authz.engine import PolicyEngine
from fedvault.server.core.db import open_database


@pytest.fixture
def db(db_url: str) -> Iterator[sqlalchemy.Engine]:
    """A migrated database with the default policies stored."""
    engine = open_database(db_url)
    with Session(engine) as session:
        store.seed_defaults(session)
    yield engine
    engine.dispose()


@pytest.fixture
def policy(db: sqlalchemy.Engine) -> PolicyEngine:
    """A policy engine over ``db`` that looks for changes before every decision."""
    return PolicyEngine(engine=db, check_interval=0)
