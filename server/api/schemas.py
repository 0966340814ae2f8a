"""Pieces every router shares: id patterns, the error body, and the base of response models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Path
from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

__all__ = [
    "IDENTIFIER",
    "POLICY_NAME",
    "ERROR_RESPONSES",
    "ErrorBody",
    "ErrorDetail",
    "Identifier",
    "IdPath",
    "PolicyNamePath",
    "PublicModel",
    "RequestModel",
    "Timestamp",
]

# Users, projects and sites: lowercase, starting with a letter (the identity service's rule).
IDENTIFIER = r"^[a-z][a-z0-9._-]{0,63}$"
# Policy names become audit and Cedar ids: no dots or underscores.
POLICY_NAME = r"^[a-z][a-z0-9-]{0,63}$"

Identifier = Annotated[str, StringConstraints(pattern=IDENTIFIER)]
IdPath = Annotated[str, Path(pattern=IDENTIFIER, description="A lowercase id, e.g. 'alice'.")]
PolicyNamePath = Annotated[
    str, Path(pattern=POLICY_NAME, description="A policy name, e.g. 'data-scientist'.")
]


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every stored time is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Timestamp = Annotated[datetime, AfterValidator(_utc)]
"""A timezone-aware UTC time in responses (``...+00:00``)."""


class RequestModel(BaseModel):
    """Base of request bodies: unknown fields are refused, not ignored."""

    model_config = ConfigDict(extra="forbid")


class PublicModel(BaseModel):
    """Base of response bodies: built from table rows; never holds a hash, key or token."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)


class ErrorDetail(BaseModel):
    code: str
    message: str
    request_id: str | None = None
    fields: list[str] | None = None


class ErrorBody(BaseModel):
    """Every error answer: ``{"error": {"code", "message", "request_id"}}``."""

    error: ErrorDetail


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("The request is malformed (e.g. the body is not valid JSON)."),
    401: _error("No API token, or one that is invalid, expired or revoked."),
    403: _error("The access policies do not permit this."),
    404: _error("No such object, or one in a project you are not a member of."),
    413: _error("The request body is too large."),
    422: _error("A field is missing or invalid; the message names it."),
    429: _error("Too many failed logins from this address; retry later."),
}
