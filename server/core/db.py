"""Database engine and migrations: the same SQLModel tables on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlmodel import create_engine

from fedvault.common.errors import ConfigError

__all__ = ["open_database"]

# The migrations (server/migrations) sit above every room, since they import all tables;
# they are found by path, so this module still imports no other room.
MIGRATIONS = Path(__file__).parent.parent / "migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def open_database(url: str, *, migrate: bool = True, pool_size: int | None = None) -> Engine:
    """An engine for ``url`` with the schema brought to the newest migration.

    Args:
        url: SQLAlchemy URL.
        migrate: apply Alembic migrations first.
        pool_size: connections kept open (and a quarter more on demand); a server answering
            many requests at once needs about one per worker thread. Default: SQLAlchemy's.

    Raises:
        ConfigError: the database cannot be reached or migrated; the message says which.
    """
    # hide_parameters: a failed statement's message must not carry row values into logs.
    pool: dict[str, Any] = {}
    if pool_size is not None:
        pool = {"pool_size": pool_size, "max_overflow": pool_size // 4}
    engine = create_engine(url, pool_pre_ping=True, hide_parameters=True, **pool)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    if migrate:
        try:
            upgrade(engine)
        except OperationalError as e:
            engine.dispose()
            raise ConfigError(
                f"Cannot open the database {engine.url.render_as_string(hide_password=True)}: "
                f"{e.orig}"
            ) from e
        except SQLAlchemyError as e:
            engine.dispose()
            raise ConfigError(f"Migrating the database failed: {e}") from e
    return engine


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply Alembic migrations up to ``revision`` (idempotent)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
