"""Column types the tables share: UTC timestamps, Flower's unsigned 64-bit ids as signed BIGINT."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Column, DateTime
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field

from fedvault.server.core.time import utcnow

__all__ = ["Uint64", "utc_timestamp"]

_WRAP = 1 << 64
_SIGNED_MAX = (1 << 63) - 1


class Uint64(TypeDecorator[int]):
    """An unsigned 64-bit integer (Flower's node and run ids) stored as a signed BIGINT.

    SQLite and PostgreSQL integers are signed 64-bit; ids from 2**63 up are stored as their
    two's-complement negative and read back unchanged.
    """

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> int | None:
        if value is None:
            return None
        number = int(value)
        if not 0 <= number < _WRAP:
            raise ValueError(f"{number} is not an unsigned 64-bit integer.")
        return number - _WRAP if number > _SIGNED_MAX else number

    def process_result_value(self, value: Any, dialect: Any) -> int | None:
        if value is None:
            return None
        return int(value) + _WRAP if value < 0 else int(value)


def utc_timestamp(*, nullable: bool = False) -> Any:
    """A timezone-aware UTC timestamp column; ``now`` by default unless ``nullable``."""
    if nullable:
        return Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    return Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
