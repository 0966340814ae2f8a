"""Projects (tenants) and their members."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from pydantic import Field

from fedvault.common.errors import NotFound
from fedvault.server.api.deps import (
    CurrentPrincipal,
    ServicesDep,
    SessionDep,
    audit_note,
    not_found,
    require,
)
from fedvault.server.api.schemas import (
    ERROR_RESPONSES,
    Identifier,
    IdPath,
    PublicModel,
    RequestModel,
    Timestamp,
)
from fedvault.server.authz.engine import Resource
from fedvault.server.identity import (
    add_member,
    create_project,
    get_project,
    list_projects,
    members,
    remove_member,
)

__all__ = ["project_resource", "router"]

router = APIRouter(prefix="/v1", tags=["projects"], responses=ERROR_RESPONSES)


class ProjectCreate(RequestModel):
    id: Identifier = Field(description="The project id, e.g. 'cardiology'.")
    description: str = Field(default="", max_length=1000)


class ProjectPublic(PublicModel):
    id: str
    description: str
    created_by: str
    created_at: Timestamp
    members: list[str]


def project_resource(project_id: IdPath) -> Resource:
    """The project as a policy resource: it is its own project (members see it)."""
    return Resource("Project", project_id, project=project_id)


async def project_resolver(project_id: IdPath) -> Resource:
    """``project_resource`` as a dependency (no I/O, so it runs on the event loop)."""
    return project_resource(project_id)


def _public(session: SessionDep, project_id: str) -> ProjectPublic:
    try:
        project = get_project(session, project_id)
        names = members(session, project_id)
    except NotFound:
        raise not_found("Project", project_id) from None
    return ProjectPublic(
        id=project.id,
        description=project.description,
        created_by=project.created_by,
        created_at=project.created_at,
        members=names,
    )


@router.post(
    "/projects",
    response_model=ProjectPublic,
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(require("project:create"))],
)
def create(body: ProjectCreate, session: SessionDep, principal: CurrentPrincipal) -> ProjectPublic:
    """Create a project (no members yet)."""
    create_project(
        session, project_id=body.id, created_by=principal.id, description=body.description
    )
    return _public(session, body.id)


@router.get(
    "/projects",
    response_model=list[ProjectPublic],
    dependencies=[Depends(require("project:list"))],
)
def list_all(
    session: SessionDep, services: ServicesDep, principal: CurrentPrincipal
) -> list[ProjectPublic]:
    """The projects the caller may read (all of them for admins)."""
    visible = [
        p.id
        for p in list_projects(session)
        if services.policy.authorize(principal, "project:read", project_resource(p.id)).allowed
    ]
    return [_public(session, project_id) for project_id in visible]


@router.get("/projects/{project_id}", response_model=ProjectPublic)
def read(
    project_id: IdPath,
    session: SessionDep,
    _: Annotated[Resource, Depends(require("project:read", project_resolver))],
) -> ProjectPublic:
    return _public(session, project_id)


def _change_member(
    session: SessionDep,
    request: Request,
    *,
    project_id: str,
    user_id: str,
    change: str,
    apply: Callable[[], object],
    missing: Callable[[], Exception],
) -> ProjectPublic:
    """The project after ``apply`` adds or removes ``user_id``; ``missing`` is the error
    when the user is not there to add or remove."""
    try:
        get_project(session, project_id)
    except NotFound:
        raise not_found("Project", project_id) from None
    audit_note(request, member=user_id, change=change)
    try:
        apply()
    except NotFound:
        raise missing() from None
    return _public(session, project_id)


@router.put("/projects/{project_id}/members/{user_id}", response_model=ProjectPublic)
def put_member(
    project_id: IdPath,
    user_id: IdPath,
    session: SessionDep,
    principal: CurrentPrincipal,
    request: Request,
    _: Annotated[Resource, Depends(require("project:update", project_resolver))],
) -> ProjectPublic:
    """Make a user a member of the project (no change if they are one already)."""
    return _change_member(
        session,
        request,
        project_id=project_id,
        user_id=user_id,
        change="add",
        apply=lambda: add_member(session, project_id=project_id, user_id=user_id, by=principal.id),
        missing=lambda: not_found("User", user_id),
    )


@router.delete("/projects/{project_id}/members/{user_id}", response_model=ProjectPublic)
def delete_member(
    project_id: IdPath,
    user_id: IdPath,
    session: SessionDep,
    principal: CurrentPrincipal,
    request: Request,
    _: Annotated[Resource, Depends(require("project:update", project_resolver))],
) -> ProjectPublic:
    """Remove a user from the project."""
    return _change_member(
        session,
        request,
        project_id=project_id,
        user_id=user_id,
        change="remove",
        apply=lambda: remove_member(
            session, project_id=project_id, user_id=user_id, by=principal.id
        ),
        missing=lambda: NotFound(f"'{user_id}' is not a member of the project '{project_id}'."),
    )
