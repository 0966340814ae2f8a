"""Identity fixtures: a migrated database session, a pepper, and node keys for sites."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from sqlmodel import Session

from fedvault.common.pki import generate_node_keys
from fedvault.server.core.db import open_database


@pytest.fixture
def session(db_url: str) -> Iterator[Session]:
    """A session on a fresh, migrated database (SQLite, and PostgreSQL when present)."""
    engine = open_database(db_url)
    with Session(engine) as s:
        yield s
    engine.dispose()


@pytest.fixture
def pepper() -> bytes:
    return secrets.token_bytes(32)


@pytest.fixture
def node_key() -> str:
    """A fresh node public key as the OpenSSH line a site hands the server."""
    return str(generate_node_keys("site-a").public_openssh.decode())
