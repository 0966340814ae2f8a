"""Audit log tables: append-only events in a hash chain, and signed checkpoints over them."""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import BigInteger, Column, Index, Integer, String, Text, text
from sqlmodel import Field, SQLModel

__all__ = ["UNALLOWED", "AuditCheckpoint", "AuditEvent", "Outcome"]

# The predicate of the partial index on outcomes; queries for them repeat it to use it.
UNALLOWED = "outcome IN ('denied', 'failed')"

# 64-bit on PostgreSQL; SQLite's INTEGER PRIMARY KEY is already 64-bit and is the rowid.
_SEQ = BigInteger().with_variant(Integer(), "sqlite")
# Byte order on PostgreSQL too (SQLite's default), so "model:" prefixes are index ranges.
_RESOURCE_ID = String(256).with_variant(String(256, collation="C"), "postgresql")


class Outcome(StrEnum):
    """What became of the action an event records."""

    ALLOWED = "allowed"
    DENIED = "denied"
    FAILED = "failed"


class AuditEvent(SQLModel, table=True):
    """One action, as committed. Rows are never updated or deleted (triggers refuse both).

    ``time`` is RFC 3339 UTC with microseconds (``2025-01-31T09:30:00.000000Z``): the exact
    text that is hashed, fixed-width so it sorts as time does. ``details`` is the RFC 8785
    canonical JSON of the event's details object, stored verbatim for the same reason.
    ``hash`` is the RFC 6962 leaf hash of ``prev_hash`` (32 bytes) followed by the event's
    canonical JSON, so the chain links every event to all before it.
    """

    __tablename__ = "audit_events"
    # Few indexes, since each one costs every append. Time needs none: it never decreases
    # along ``seq``, so a time window is found by bisecting the primary key. Denied and
    # failed events are rare, so their partial index stays small.
    __table_args__ = (
        Index("ix_audit_events_actor", "actor", "seq"),
        Index("ix_audit_events_resource", "resource_type", "resource_id", "seq"),
        Index(
            "ix_audit_events_unallowed",
            "outcome",
            "seq",
            sqlite_where=text(UNALLOWED),
            postgresql_where=text(UNALLOWED),
        ),
    )

    seq: int = Field(sa_column=Column(_SEQ, primary_key=True, autoincrement=False))
    time: str = Field(max_length=27)
    actor: str = Field(max_length=256)
    actor_type: str = Field(max_length=32)
    action: str = Field(max_length=64)
    resource_type: str = Field(max_length=32)
    resource_id: str = Field(sa_column=Column(_RESOURCE_ID, nullable=False))
    project: str | None = Field(default=None, max_length=128)
    outcome: str = Field(max_length=16)
    policy: str | None = Field(default=None, max_length=256)
    source: str | None = Field(default=None, max_length=128)
    request_id: str | None = Field(default=None, max_length=128)
    details: str = Field(sa_column=Column(Text, nullable=False))
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class AuditCheckpoint(SQLModel, table=True):
    """A signed statement of the log's size and Merkle root (a C2SP checkpoint).

    The signature covers the checkpoint text rebuilt from ``tree_size`` and ``root``;
    ``frontier`` (the roots of the perfect subtrees at ``tree_size``) is an unsigned cache
    that lets a writer resume without rehashing the whole log.
    """

    __tablename__ = "audit_checkpoints"

    id: int | None = Field(default=None, primary_key=True)
    tree_size: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    root: str = Field(max_length=64)
    time: str = Field(max_length=27)
    key_id: str = Field(max_length=8)
    signature: str = Field(max_length=128)
    frontier: str = Field(sa_column=Column(Text, nullable=False))
