"""Model registry tables: models, and their encrypted versions with lineage."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

from fedvault.server.core.sqltypes import utc_timestamp

__all__ = [
    "ModelRecord",
    "ModelVersion",
    "ModelVersionPublic",
    "VersionState",
    "metadata",
]

metadata = SQLModel.metadata


class VersionState:
    """A version is ``writing`` from reserving its number until its blob is durable."""

    WRITING = "writing"
    READY = "ready"


class ModelRecord(SQLModel, table=True):
    """A named model; its versions are the stored checkpoints and results."""

    __tablename__ = "models"

    id: str = Field(primary_key=True, max_length=128)
    description: str = Field(default="", max_length=1000)
    project: str | None = Field(default=None, max_length=128, index=True)
    created_by: str = Field(max_length=128)
    created_at: datetime = utc_timestamp()


class ModelVersionBase(SQLModel):
    """Everything about a version that may be shown to an authorized reader."""

    model_id: str = Field(foreign_key="models.id", max_length=128, index=True)
    version: int
    state: str = Field(default=VersionState.WRITING, max_length=16)
    run_id: str | None = Field(default=None, max_length=128, index=True)
    round: int | None = None
    parent_model_id: str | None = Field(default=None, max_length=128)
    parent_version: int | None = None
    sites: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))
    dp: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    format: str = Field(default="safetensors", max_length=32)
    sha256: str | None = Field(default=None, max_length=64)
    size: int | None = Field(default=None, sa_column=Column(BigInteger))
    created_by: str = Field(max_length=128)
    created_at: datetime = utc_timestamp()


class ModelVersion(ModelVersionBase, table=True):
    """The table row: also where the blob lives and its wrapped data key (never shown)."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version", name="uq_model_version"),)

    id: int | None = Field(default=None, primary_key=True)
    blob: str | None = Field(default=None, max_length=512)
    stored_size: int | None = Field(default=None, sa_column=Column(BigInteger))
    kek_version: int | None = Field(default=None, index=True)
    wrapped_key: bytes | None = Field(default=None, sa_column=Column(LargeBinary))


class ModelVersionPublic(ModelVersionBase):
    """A version as the CLI and API show it: lineage and metrics, no key or storage detail."""

    @property
    def ref(self) -> str:
        return f"{self.model_id}:{self.version}"
