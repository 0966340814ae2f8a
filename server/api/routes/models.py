"""Model routes: list, versions, metadata with lineage, and decrypting downloads."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict

from fedvault.common.errors import NotFound
from fedvault.server.api.deps import (
    CurrentPrincipal,
    ServicesDep,
    SessionDep,
    audit_note,
    not_found,
    require,
)
from fedvault.server.api.schemas import ERROR_RESPONSES
from fedvault.server.authz.engine import Resource
from fedvault.server.runs.service import model_project
from fedvault.server.store.tables import ModelRecord, ModelVersionPublic

__all__ = [
    "ModelDetail",
    "ModelPublic",
    "ModelVersionInfo",
    "export_allowed",
    "model_resource",
    "router",
    "version_resource",
]

router = APIRouter(prefix="/v1/models", tags=["models"], responses=ERROR_RESPONSES)

ModelId = Annotated[
    str,
    Path(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
        description="Model id: 1-128 letters, digits, '.', '_' or '-'.",
    ),
]
Version = Annotated[int, Path(ge=1, le=2**31 - 1, description="Version number, from 1.")]


def export_allowed(sites: list[dict[str, Any]]) -> bool:
    """A version may leave the server only if every contributing site's policy allows it."""
    return all(bool(site.get("allow-export", False)) for site in sites)


class ModelVersionInfo(BaseModel):
    """A stored version: lineage, DP parameters and metrics; no hashes, keys or paths."""

    model_config = ConfigDict(extra="forbid")

    model_id: str
    version: int
    run_id: str | None
    round: int | None
    parent: str | None
    sites: list[dict[str, Any]]
    dp: dict[str, Any]
    metrics: dict[str, Any]
    config: dict[str, Any]
    format: str
    size: int | None
    created_by: str
    created_at: datetime
    export_allowed: bool

    @classmethod
    def of(cls, v: ModelVersionPublic) -> ModelVersionInfo:
        parent = f"{v.parent_model_id}:{v.parent_version}" if v.parent_model_id else None
        return cls(
            model_id=v.model_id,
            version=v.version,
            run_id=v.run_id,
            round=v.round,
            parent=parent,
            sites=v.sites,
            dp=v.dp,
            metrics=v.metrics,
            config=v.config,
            format=v.format,
            size=v.size,
            created_by=v.created_by,
            created_at=v.created_at,
            export_allowed=export_allowed(v.sites),
        )


class ModelPublic(BaseModel):
    """A model and its newest version number."""

    model_config = ConfigDict(extra="forbid")

    id: str
    project: str
    description: str
    created_by: str
    created_at: datetime
    versions: int
    latest_version: int | None


class ModelDetail(ModelPublic):
    """A model with all its versions, oldest first."""

    history: list[ModelVersionInfo]


def _model(session: SessionDep, model_id: str, *, ref: str | None = None) -> ModelRecord:
    model = session.get(ModelRecord, model_id)
    if model is None:
        raise not_found("Model", ref or model_id)
    return model


def _as_resource(model: ModelRecord, *, ref: str, allowed: bool) -> Resource:
    project = model_project(model)
    return Resource("Model", ref, project=project, attrs={"export_allowed": allowed})


def model_resource(model_id: ModelId, session: SessionDep, services: ServicesDep) -> Resource:
    """The model named in the path (its export flag: that of its newest version)."""
    model = _model(session, model_id)
    try:
        allowed = export_allowed(services.store.get(model_id).sites)
    except NotFound:  # no version stored yet: nothing to export
        allowed = False
    return _as_resource(model, ref=model_id, allowed=allowed)


def version_resource(
    model_id: ModelId, version: Version, session: SessionDep, services: ServicesDep
) -> Resource:
    """The version named in the path, ``Model::"ID:N"``, with its own export flag."""
    ref = f"{model_id}:{version}"
    model = _model(session, model_id, ref=ref)
    try:
        found = services.store.get(model_id, version)
    except NotFound:
        raise not_found("Model", ref) from None
    return _as_resource(model, ref=found.ref, allowed=export_allowed(found.sites))


def _public(model: ModelRecord, *, count: int, latest: int | None) -> dict[str, Any]:
    return {
        "id": model.id,
        "project": model_project(model),
        "description": model.description,
        "created_by": model.created_by,
        "created_at": model.created_at,
        "versions": count,
        "latest_version": latest,
    }


@router.get("", response_model=list[ModelPublic], dependencies=[Depends(require("model:list"))])
def list_models(principal: CurrentPrincipal, services: ServicesDep) -> list[ModelPublic]:
    """The models the caller may read, by id."""
    out = []
    for model, newest, count in services.store.list_models():
        allowed = bool(newest and export_allowed(newest.sites))
        resource = _as_resource(model, ref=model.id, allowed=allowed)
        if services.policy.authorize(principal, "model:read", resource).allowed:
            latest = newest.version if newest else None
            out.append(ModelPublic(**_public(model, count=count, latest=latest)))
    return out


@router.get("/{model_id}", response_model=ModelDetail)
def get_model(
    model_id: ModelId,
    session: SessionDep,
    services: ServicesDep,
    _: Annotated[Resource, Depends(require("model:read", model_resource))],
) -> ModelDetail:
    """A model and all its versions with their lineage."""
    versions = services.store.versions(model_id)
    model = _model(session, model_id)
    latest = versions[-1].version if versions else None
    return ModelDetail(
        **_public(model, count=len(versions), latest=latest),
        history=[ModelVersionInfo.of(v) for v in versions],
    )


@router.get("/{model_id}/versions/{version}", response_model=ModelVersionInfo)
def get_version(
    model_id: ModelId,
    version: Version,
    services: ServicesDep,
    _: Annotated[Resource, Depends(require("model:read", version_resource))],
) -> ModelVersionInfo:
    """One version's metadata: lineage, contributing sites and their privacy figures."""
    return ModelVersionInfo.of(services.store.get(model_id, version))


@router.get(
    "/{model_id}/versions/{version}/download",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def download_version(
    model_id: ModelId,
    version: Version,
    request: Request,
    services: ServicesDep,
    _: Annotated[Resource, Depends(require("model:download", version_resource))],
) -> StreamingResponse:
    """The version's plaintext, decrypted and checked segment by segment as it is sent."""
    found = services.store.get(model_id, version)
    chunks = services.store.read(model_id, version)
    first = next(chunks, b"")  # a missing or unreadable blob fails here, before any header

    def body() -> Iterator[bytes]:
        yield first
        yield from chunks

    audit_note(request, version=version, size=found.size, format=found.format)
    suffix = "safetensors" if found.format == "safetensors" else "bin"
    headers = {
        "Content-Disposition": f'attachment; filename="{model_id}-v{version}.{suffix}"',
        "Cache-Control": "no-store",
    }
    if found.size is not None:
        headers["Content-Length"] = str(found.size)
    return StreamingResponse(body(), media_type="application/octet-stream", headers=headers)
