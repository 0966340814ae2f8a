"""Identity tables: users, projects and membership, sites, and API tokens (digests only)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel

from fedvault.server.core.sqltypes import Uint64, utc_timestamp

__all__ = [
    "ApiToken",
    "Membership",
    "PrincipalType",
    "Project",
    "Role",
    "Site",
    "SiteStatus",
    "User",
]


class Role(StrEnum):
    """What a user is, in the words of the access policies (``principal.role``)."""

    ADMIN = "admin"
    DATA_SCIENTIST = "data_scientist"
    AUDITOR = "auditor"
    SITE_OPERATOR = "site_operator"


class PrincipalType(StrEnum):
    """Who holds a token: a person, or a site's agent."""

    USER = "user"
    SITE = "site"


class SiteStatus(StrEnum):
    REGISTERED = "registered"  # its node key is on the SuperLink's allow-list
    REVOKED = "revoked"  # removed from the allow-list; its tokens no longer work


class User(SQLModel, table=True):
    """A person. ``id`` is the login name; ``site_id`` ties a site operator to a site."""

    __tablename__ = "users"

    id: str = Field(primary_key=True, max_length=64)
    role: str = Field(max_length=32)
    display_name: str = Field(default="", max_length=200)
    site_id: str | None = Field(default=None, foreign_key="sites.id", max_length=64)
    disabled: bool = False
    created_by: str = Field(max_length=64)
    created_at: datetime = utc_timestamp()


class Project(SQLModel, table=True):
    """A tenant: runs and models belong to one; users see only their projects' objects."""

    __tablename__ = "projects"

    id: str = Field(primary_key=True, max_length=64)
    description: str = Field(default="", max_length=1000)
    created_by: str = Field(max_length=64)
    created_at: datetime = utc_timestamp()


class Membership(SQLModel, table=True):
    """A user belongs to a project."""

    __tablename__ = "memberships"

    project_id: str = Field(foreign_key="projects.id", primary_key=True, max_length=64)
    user_id: str = Field(foreign_key="users.id", primary_key=True, max_length=64, index=True)
    added_by: str = Field(max_length=64)
    added_at: datetime = utc_timestamp()


class Site(SQLModel, table=True):
    """A site of the federation: its node public key and Flower node id while registered."""

    __tablename__ = "sites"

    id: str = Field(primary_key=True, max_length=64)
    description: str = Field(default="", max_length=1000)
    public_key: str = Field(sa_column=Column(Text, nullable=False))  # OpenSSH, one line
    fingerprint: str = Field(max_length=128, unique=True)  # SHA256:... of the public key
    node_id: int | None = Field(default=None, sa_column=Column(Uint64, nullable=True))
    status: str = Field(default=SiteStatus.REGISTERED, max_length=16)
    created_by: str = Field(max_length=64)
    created_at: datetime = utc_timestamp()
    revoked_at: datetime | None = utc_timestamp(nullable=True)


class ApiToken(SQLModel, table=True):
    """An API token. Only its HMAC-SHA256 (keyed by the server's pepper) is stored.

    ``id`` is public (shown in listings, used to revoke); ``prefix`` is the first characters
    of the token, so a user can tell their tokens apart without the secret.
    """

    __tablename__ = "api_tokens"

    id: str = Field(primary_key=True, max_length=32)
    digest: str = Field(max_length=64, unique=True)
    prefix: str = Field(max_length=16)
    principal_type: str = Field(max_length=16)
    principal_id: str = Field(max_length=64, index=True)
    name: str = Field(default="", max_length=200)
    created_by: str = Field(max_length=64)
    created_at: datetime = utc_timestamp()
    expires_at: datetime | None = utc_timestamp(nullable=True)
    revoked_at: datetime | None = utc_timestamp(nullable=True)
    last_used_at: datetime | None = utc_timestamp(nullable=True)
