"""Shared checks of the identity service: identifiers, text fields, lookups and commits."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlmodel import Session, SQLModel

from fedvault.common.errors import AlreadyExists, ConfigError, NotFound

__all__ = ["ID_PATTERN", "as_utc", "check_id", "check_text", "commit", "require"]

ID_PATTERN = re.compile(r"[a-z][a-z0-9._-]{0,63}")
_ID_RULE = (
    "it must start with a lowercase letter and have at most 64 lowercase letters, digits, "
    "'.', '_' or '-'"
)

T = TypeVar("T", bound=SQLModel)


def check_id(value: Any, *, what: str) -> str:
    """Return ``value`` if it is a valid user, project or site id.

    Raises:
        ConfigError: it is not; the message gives the rule.
    """
    if not isinstance(value, str) or ID_PATTERN.fullmatch(value) is None:
        raise ConfigError(f"{value!r} is not a valid {what} id: {_ID_RULE}.")
    return value


def check_text(value: Any, *, what: str, max_len: int) -> str:
    """Return ``value`` if it is a string of at most ``max_len`` characters."""
    if not isinstance(value, str):
        raise ConfigError(f"The {what} must be text, not {type(value).__name__}.")
    if len(value) > max_len:
        raise ConfigError(f"The {what} is {len(value)} characters long; at most {max_len}.")
    return value


def as_utc(when: datetime | None) -> datetime | None:
    """A timezone-aware UTC datetime (SQLite hands back naive ones)."""
    if when is None:
        return None
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def require(session: Session, model: type[T], key: str, *, what: str) -> T:
    """The row of ``model`` with primary key ``key``.

    Raises:
        NotFound: there is none.
    """
    row = session.get(model, key) if isinstance(key, str) else None
    if row is None:
        raise NotFound(f"No {what} {key!r}.")
    return row


def commit(session: Session, *, conflict: str) -> None:
    """Commit, turning a unique-constraint race into ``AlreadyExists(conflict)``."""
    try:
        session.commit()
    except DBIntegrityError as e:
        session.rollback()
        raise AlreadyExists(conflict) from e
