"""Liveness without a token (``/v1/health``) and Prometheus metrics (``/metrics``)."""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from fedvault.server.api.deps import ServicesDep, require
from fedvault.server.api.schemas import ERROR_RESPONSES, PublicModel
from fedvault.server.authz.engine import Resource

__all__ = ["HealthPublic", "router"]

log = logging.getLogger("fedvault.server.api")

router = APIRouter(tags=["health"])


class HealthPublic(PublicModel):
    status: Literal["ok", "degraded"]
    database: Literal["ok", "unreachable"]
    federation: Literal["configured", "not_running"]


@router.get("/v1/health", response_model=HealthPublic)
def health(services: ServicesDep, response: Response) -> HealthPublic:
    """Whether the API can reach its database, and whether a federation is attached."""
    try:
        with services.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        database: Literal["ok", "unreachable"] = "ok"
    except SQLAlchemyError as e:
        log.error("Health check: the database is unreachable: %s", e)
        database = "unreachable"
    federation: Literal["configured", "not_running"] = (
        "configured" if services.federation is not None else "not_running"
    )
    if database != "ok":
        response.status_code = 503
    return HealthPublic(
        status="ok" if database == "ok" else "degraded", database=database, federation=federation
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **ERROR_RESPONSES},
)
def metrics(
    _: Annotated[Resource, Depends(require("metrics:read"))], services: ServicesDep
) -> Response:
    """Request counts and latencies in the Prometheus text format."""
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)
