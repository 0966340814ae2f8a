"""Insert committed events with few trips into the database driver."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect

from fedvault.server.audit._chain import EVENTS
from fedvault.server.audit.canonical import EVENT_COLUMNS

__all__ = ["RowInserter"]

_COLUMNS = (*EVENT_COLUMNS, "prev_hash", "hash")
# 15 parameters a row. SQLite (since 3.32) takes 32,766 parameters a statement, older
# ones 999; PostgreSQL 65,535. A typical batch then goes in one statement.
_ROWS_PER_STATEMENT = {"sqlite": 2000 if sqlite3.sqlite_version_info >= (3, 32) else 60}
_ROWS_DEFAULT = 4000


class RowInserter:
    """Multi-row INSERT statements, straight to the DBAPI cursor.

    Each statement is one call into the driver, which releases the GIL once rather than
    once per row, and skips SQLAlchemy's per-row parameter handling, which would cost more
    than the insert itself.
    """

    def __init__(self, dialect: Dialect):
        self._mark = "?" if dialect.paramstyle == "qmark" else "%s"
        self._rows = _ROWS_PER_STATEMENT.get(dialect.name, _ROWS_DEFAULT)

    @lru_cache(maxsize=64)  # noqa: B019  (a bounded set of statement sizes per writer)
    def _sql(self, rows: int) -> str:
        one = f"({', '.join(self._mark for _ in _COLUMNS)})"
        head = f"INSERT INTO {EVENTS.name} ({', '.join(_COLUMNS)}) VALUES "  # noqa: S608
        return head + ", ".join(itertools.repeat(one, rows))

    def __call__(self, conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            for start in range(0, len(rows), self._rows):
                chunk = rows[start : start + self._rows]
                cursor.execute(self._sql(len(chunk)), list(itertools.chain.from_iterable(chunk)))
        finally:
            cursor.close()
