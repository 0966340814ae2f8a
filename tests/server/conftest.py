"""Database fixtures: every DB test runs on SQLite and on the real PostgreSQL when present."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from fedvault.common.crypto import LocalKeyring
from fedvault.server.core.db import open_database
from fedvault.server.store.service import ModelStore

POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _postgres_reason() -> str | None:
    try:
        engine = create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
    except OperationalError as e:
        return f"PostgreSQL not reachable at 127.0.0.1:5432 ({e.orig})"
    return None


_PG_SKIP = _postgres_reason()


@pytest.fixture(
    scope="function", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file, or a new PostgreSQL database dropped after."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fedvault.db'}"
        return
    if _PG_SKIP:
        pytest.skip(_PG_SKIP)
    name = f"fedvault_test_{secrets.token_hex(4)}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def store(db_url: str, tmp_path: Path) -> Iterator[ModelStore]:
    """A model store over a fresh database, a fresh keyring and an empty blob directory."""
    engine = open_database(db_url)
    kek = LocalKeyring.create(tmp_path / "keyring.json")
    yield ModelStore(engine=engine, blob_dir=tmp_path / "blobs", kek=kek, segment_size=4096)
    engine.dispose()
