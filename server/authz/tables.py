"""Versioned access policies: every edit is a new row; the newest version of a name is in force."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from fedvault.server.core.sqltypes import utc_timestamp

__all__ = ["PolicyVersion"]


class PolicyVersion(SQLModel, table=True):
    """One version of one named Cedar policy (a ``permit`` or ``forbid``, possibly several).

    ``deleted`` marks a version that withdraws the policy; earlier versions stay for the
    record. ``sha256`` is over ``text`` as stored.
    """

    __tablename__ = "policy_versions"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_policy_version"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, index=True)
    version: int
    text: str = Field(sa_column=Column(Text, nullable=False))
    sha256: str = Field(max_length=64)
    deleted: bool = False
    created_by: str = Field(max_length=64)
    created_at: datetime = utc_timestamp()
