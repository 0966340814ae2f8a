"""Access policies: read, edit (validated first, every version kept), delete, and dry runs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field
from sqlmodel import Session

from fedvault.common.errors import NotFound
from fedvault.server.api.deps import (
    CurrentPrincipal,
    ServicesDep,
    SessionDep,
    audit_note,
    require,
)
from fedvault.server.api.schemas import (
    ERROR_RESPONSES,
    Identifier,
    PolicyNamePath,
    PublicModel,
    RequestModel,
    Timestamp,
)
from fedvault.server.authz import store
from fedvault.server.authz.engine import RESOURCE_TYPES, Resource
from fedvault.server.authz.tables import PolicyVersion
from fedvault.server.identity import (
    Principal,
    PrincipalType,
    get_site,
    get_user,
    list_projects,
)

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["policies"], responses=ERROR_RESPONSES)

MAX_POLICY_CHARS = 100_000
ACTION = r"^[a-z]+:[a-z-]+$"
ResourceType = Literal[tuple(sorted(RESOURCE_TYPES))]  # type: ignore[valid-type]


class PolicyPut(RequestModel):
    text: str = Field(min_length=1, max_length=MAX_POLICY_CHARS, description="Cedar text.")


class PolicyPublic(PublicModel):
    name: str
    version: int
    text: str
    deleted: bool
    created_by: str
    created_at: Timestamp


class DecidePrincipal(RequestModel):
    type: PrincipalType
    id: Identifier


class DecideResource(RequestModel):
    type: ResourceType  # type: ignore[valid-type]
    id: str = Field(min_length=1, max_length=256)
    project: Identifier | None = None
    attrs: dict[str, bool | int | str] = Field(default_factory=dict, max_length=32)


class DecideRequest(RequestModel):
    principal: DecidePrincipal
    action: str = Field(pattern=ACTION, max_length=64, examples=["model:download"])
    resource: DecideResource


class DecisionPublic(PublicModel):
    allowed: bool
    policies: list[str]
    errors: list[str]


async def policy_resource(name: PolicyNamePath) -> Resource:
    return Resource("Policy", name)


def _public(row: PolicyVersion) -> PolicyPublic:
    return PolicyPublic.model_validate(row)


def _changed(request: Request, services: ServicesDep, row: PolicyVersion) -> None:
    services.policy.invalidate()
    audit_note(request, policy=row.name, version=row.version, policy_set=services.policy.set_hash)


@router.get(
    "/policies", response_model=list[PolicyPublic], dependencies=[Depends(require("policy:read"))]
)
def list_in_force(session: SessionDep) -> list[PolicyPublic]:
    """The policies in force (the newest version of each name), by name."""
    return [_public(row) for row in store.in_force(session)]


@router.get("/policies/{name}", response_model=PolicyPublic)
def read(
    name: PolicyNamePath,
    session: SessionDep,
    _: Annotated[Resource, Depends(require("policy:read", policy_resource))],
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> PolicyPublic:
    """The policy in force, or one version of it (``?version=``, deleted ones included)."""
    return _public(store.get(session, name, version=version))


@router.get("/policies/{name}/versions", response_model=list[PolicyPublic])
def versions(
    name: PolicyNamePath,
    session: SessionDep,
    _: Annotated[Resource, Depends(require("policy:read", policy_resource))],
) -> list[PolicyPublic]:
    """Every version of a policy, oldest first."""
    rows = store.history(session, name)
    if not rows:
        raise NotFound(
            f"No policy named {name!r} was ever stored; list them with GET /v1/policies."
        )
    return [_public(row) for row in rows]


@router.put("/policies/{name}", response_model=PolicyPublic)
def put(
    name: PolicyNamePath,
    body: PolicyPut,
    session: SessionDep,
    services: ServicesDep,
    principal: CurrentPrincipal,
    request: Request,
    _: Annotated[Resource, Depends(require("policy:write", policy_resource))],
) -> PolicyPublic:
    """Create or change a policy. It is checked against the schema, alone and with the
    others, before it is stored; an invalid one is refused (422) and nothing changes."""
    row = store.put(
        session,
        name=name,
        text=body.text,
        created_by=principal.id,
        validator=services.policy.validate,
    )
    _changed(request, services, row)
    return _public(row)


@router.delete("/policies/{name}", response_model=PolicyPublic)
def delete(
    name: PolicyNamePath,
    session: SessionDep,
    services: ServicesDep,
    principal: CurrentPrincipal,
    request: Request,
    _: Annotated[Resource, Depends(require("policy:write", policy_resource))],
) -> PolicyPublic:
    """Withdraw a policy (a new, deleted version; earlier versions stay readable)."""
    row = store.delete(session, name=name, deleted_by=principal.id)
    _changed(request, services, row)
    return _public(row)


def _principal_of(session: Session, body: DecidePrincipal) -> Principal:
    if body.type == PrincipalType.SITE:
        site = get_site(session, body.id)
        return Principal(
            type=PrincipalType.SITE, id=site.id, role=None, projects=frozenset(), site_id=site.id
        )
    user = get_user(session, body.id)
    projects = frozenset(p.id for p in list_projects(session, member=user.id))
    return Principal(
        type=PrincipalType.USER,
        id=user.id,
        role=user.role,
        projects=projects,
        site_id=user.site_id,
    )


@router.post(
    "/policies/decide",
    response_model=DecisionPublic,
    dependencies=[Depends(require("policy:test"))],
)
def decide(body: DecideRequest, session: SessionDep, services: ServicesDep) -> DecisionPublic:
    """Dry run: what the policies in force decide for this principal, action and resource."""
    subject = _principal_of(session, body.principal)
    attrs: dict[str, Any] = dict(body.resource.attrs)
    target = Resource(
        body.resource.type, body.resource.id, project=body.resource.project, attrs=attrs
    )
    decision = services.policy.authorize(subject, body.action, target)
    return DecisionPublic(
        allowed=decision.allowed, policies=list(decision.policies), errors=list(decision.errors)
    )
