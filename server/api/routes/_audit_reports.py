"""Compliance report routes: model access, a principal's actions, denials, privacy, lineage."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict

from fedvault.common.errors import ConfigError
from fedvault.server.api.deps import ServicesDep, require
from fedvault.server.api.schemas import ERROR_RESPONSES
from fedvault.server.audit.canonical import parse_time
from fedvault.server.audit.federation import ModelLineage, model_lineage, privacy_spend
from fedvault.server.audit.reports import actor_activity, denied_actions, who_accessed
from fedvault.server.authz.engine import Resource

__all__ = ["LineagePublic", "parse_when", "router"]

router = APIRouter(prefix="/v1/audit/reports", tags=["audit"], responses=ERROR_RESPONSES)

_Time = Annotated[
    str | None, Query(max_length=64, description="ISO 8601 time with a timezone, or a date.")
]
_ModelId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]


def _audit_log() -> Resource:
    return Resource("AuditLog", "log")


_ReadAudit = Depends(require("audit:read", _audit_log))


def parse_when(text: str | None, *, name: str) -> datetime | None:
    """A query's time bound, or None; out-of-range times are bad input, not a crash."""
    if not text:
        return None
    try:
        when: datetime = parse_time(text, name=name)
    except OverflowError:
        raise ConfigError(f"Invalid {name} {text!r}: the time is out of range.") from None
    return when


def _window(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    return parse_when(since, name="since"), parse_when(until, name="until")


class LineagePublic(BaseModel):
    """A version's run, rounds, sites, DP parameters and policies, and its ancestors."""

    model_config = ConfigDict(extra="forbid")

    ref: str
    stored_at: str
    run_id: str
    project: str | None
    round: int | None
    dp: dict[str, Any]
    sites: dict[str, dict[str, Any]]
    rounds: list[dict[str, Any]]
    policies: list[str]
    parent: str | None
    ancestors: list[LineagePublic]

    @classmethod
    def of(cls, lineage: ModelLineage) -> LineagePublic:
        fields = {k: v for k, v in asdict(lineage).items() if k not in ("sha256", "ancestors")}
        return cls(**fields, ancestors=[cls.of(a) for a in lineage.ancestors])


@router.get("/model-access/{model_id}", dependencies=[_ReadAudit])
def model_access(
    services: ServicesDep,
    model_id: _ModelId,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> list[dict[str, Any]]:
    """Who acted on a model (all its versions, or one), by action and outcome."""
    ref = f"{model_id}:{version}" if version is not None else model_id
    return [row._asdict() for row in who_accessed(services.audit.engine, ref)]


@router.get("/principal/{actor}", dependencies=[_ReadAudit])
def principal_activity(
    services: ServicesDep,
    actor: Annotated[str, Path(min_length=1, max_length=256)],
    since: _Time = None,
    until: _Time = None,
) -> list[dict[str, Any]]:
    """Everything one principal did, by action, resource type and outcome."""
    start, end = _window(since, until)
    rows = actor_activity(services.audit.engine, actor, since=start, until=end)
    return [row._asdict() for row in rows]


@router.get("/denied", dependencies=[_ReadAudit])
def denied(services: ServicesDep, since: _Time = None, until: _Time = None) -> list[dict[str, Any]]:
    """Denied actions in a time window: who tried what, where, and the deciding policy."""
    start, end = _window(since, until)
    return [row._asdict() for row in denied_actions(services.audit.engine, since=start, until=end)]


@router.get("/privacy", dependencies=[_ReadAudit])
def privacy(
    services: ServicesDep,
    run: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    project: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
) -> list[dict[str, Any]]:
    """Privacy spend (epsilon) per site per run."""
    rows = privacy_spend(services.audit.engine, run_id=run, project=project)
    return [asdict(row) for row in rows]


@router.get(
    "/lineage/{model_id}/{version}", response_model=LineagePublic, dependencies=[_ReadAudit]
)
def lineage(
    services: ServicesDep,
    model_id: _ModelId,
    version: Annotated[int, Path(ge=1, le=2**31 - 1)],
) -> LineagePublic:
    """The runs, rounds, sites, DP parameters and policies behind a model version."""
    return LineagePublic.of(model_lineage(services.audit.engine, f"{model_id}:{version}"))
