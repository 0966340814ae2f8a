"""Column types the tables share: Flower's unsigned 64-bit ids in a signed BIGINT column."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger
from sqlalchemy.types import TypeDecorator

__all__ = ["Uint64"]

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
