"""Run records: who submitted which configuration, and what Flower made of it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Text
from sqlmodel import Field, SQLModel

from fedvault.server.core.sqltypes import Uint64, utc_timestamp

__all__ = ["RunRecord", "RunState"]


class RunState(StrEnum):
    SUBMITTED = "submitted"  # recorded, not yet accepted by the SuperLink
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"


class RunRecord(SQLModel, table=True):
    """A run submitted through the admin API. ``name`` is the run-name checkpoints carry."""

    __tablename__ = "runs"

    id: str = Field(primary_key=True, max_length=32)
    project: str = Field(foreign_key="projects.id", max_length=64, index=True)
    name: str = Field(max_length=128)
    flower_run_id: int | None = Field(default=None, sa_column=Column(Uint64, nullable=True))
    state: str = Field(default=RunState.SUBMITTED, max_length=16)
    details: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_by: str = Field(max_length=64)
    created_at: datetime = utc_timestamp()
    finished_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
