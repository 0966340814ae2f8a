"""Users, their API tokens, and ``/v1/me``."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, status
from pydantic import Field

from fedvault.common.errors import NotFound
from fedvault.server.api.deps import (
    CurrentPrincipal,
    ServicesDep,
    SessionDep,
    audit_note,
    audit_state,
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
    PrincipalType,
    Role,
    create_user,
    get_token,
    get_user,
    issue_token,
    list_tokens,
    list_users,
    revoke_token,
    set_disabled,
)

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["users"], responses=ERROR_RESPONSES)

TOKEN_ID = r"^tok_[A-Za-z0-9]{1,28}$"  # noqa: S105 -- the public id pattern
DEFAULT_TOKEN_DAYS = 90


class UserCreate(RequestModel):
    id: Identifier = Field(description="The login name, e.g. 'alice'.")
    role: Role
    display_name: str = Field(default="", max_length=200)
    site_id: Identifier | None = Field(default=None, description="Site operators: their site.")


class UserUpdate(RequestModel):
    disabled: bool = Field(description="True stops the user's tokens from working.")


class UserPublic(PublicModel):
    id: str
    role: str
    display_name: str
    site_id: str | None
    disabled: bool
    created_by: str
    created_at: Timestamp


class MePublic(PublicModel):
    type: str
    id: str
    role: str | None
    projects: list[str]
    site_id: str | None
    token_id: str | None


class TokenCreate(RequestModel):
    name: str = Field(default="", max_length=200, description="What the token is for.")
    expires_in_days: int = Field(default=DEFAULT_TOKEN_DAYS, ge=1, le=365)


class TokenPublic(PublicModel):
    id: str
    prefix: str
    principal_type: str
    principal_id: str
    name: str
    created_by: str
    created_at: Timestamp
    expires_at: Timestamp | None
    revoked_at: Timestamp | None
    last_used_at: Timestamp | None


class TokenCreated(TokenPublic):
    token: str = Field(description="The token itself: shown this once, never again.")


async def user_resource(user_id: IdPath) -> Resource:
    return Resource("User", user_id)


async def user_tokens_resource(user_id: IdPath) -> Resource:
    """A user's tokens as a whole (to list them or add one): owned by that user."""
    return Resource("Token", f"{user_id}/tokens", attrs={"owner": user_id})


def token_resource(
    token_id: Annotated[str, Path(pattern=TOKEN_ID)], session: SessionDep
) -> Resource:
    try:
        row = get_token(session, token_id)
    except NotFound:
        raise not_found("Token", token_id) from None
    attrs = {"owner": row.principal_id, "owner_type": row.principal_type}
    return Resource("Token", token_id, attrs=attrs)


def _user(session: SessionDep, user_id: str) -> UserPublic:
    try:
        return UserPublic.model_validate(get_user(session, user_id))
    except NotFound:
        raise not_found("User", user_id) from None


@router.get("/me", response_model=MePublic)
def me(principal: CurrentPrincipal, request: Request) -> MePublic:
    """Who the token in this request belongs to, with role and projects."""
    audit_state(request).action = "auth.whoami"
    return MePublic(
        type=str(principal.type),
        id=principal.id,
        role=principal.role,
        projects=sorted(principal.projects),
        site_id=principal.site_id,
        token_id=principal.token_id,
    )


@router.post(
    "/users",
    response_model=UserPublic,
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(require("user:create"))],
)
def create(body: UserCreate, session: SessionDep, principal: CurrentPrincipal) -> UserPublic:
    """Create a user (no token yet: issue one with ``POST /v1/users/{id}/tokens``)."""
    user = create_user(
        session,
        user_id=body.id,
        role=body.role.value,
        created_by=principal.id,
        display_name=body.display_name,
        site_id=body.site_id,
    )
    return UserPublic.model_validate(user)


@router.get("/users", response_model=list[UserPublic], dependencies=[Depends(require("user:list"))])
def list_all(session: SessionDep, role: Role | None = None) -> list[UserPublic]:
    """All users, by id (optionally of one role)."""
    users = list_users(session, role=role.value if role else None)
    return [UserPublic.model_validate(u) for u in users]


@router.get("/users/{user_id}", response_model=UserPublic)
def read(
    user_id: IdPath,
    session: SessionDep,
    _: Annotated[Resource, Depends(require("user:read", user_resource))],
) -> UserPublic:
    return _user(session, user_id)


@router.patch("/users/{user_id}", response_model=UserPublic)
def update(
    user_id: IdPath,
    body: UserUpdate,
    session: SessionDep,
    principal: CurrentPrincipal,
    request: Request,
    _: Annotated[Resource, Depends(require("user:update", user_resource))],
) -> UserPublic:
    """Disable a user (their tokens stop working at once) or enable them again."""
    _user(session, user_id)
    audit_note(request, disabled=body.disabled)
    return UserPublic.model_validate(
        set_disabled(session, user_id=user_id, disabled=body.disabled, by=principal.id)
    )


@router.post(
    "/users/{user_id}/tokens", response_model=TokenCreated, status_code=status.HTTP_201_CREATED
)
def create_token(
    user_id: IdPath,
    body: TokenCreate,
    session: SessionDep,
    services: ServicesDep,
    principal: CurrentPrincipal,
    request: Request,
    _: Annotated[Resource, Depends(require("token:create", user_tokens_resource))],
) -> TokenCreated:
    """Issue a token to a user; the answer holds the token itself, this once."""
    _user(session, user_id)
    token, row = issue_token(
        session,
        pepper=services.pepper,
        principal_type=PrincipalType.USER.value,
        principal_id=user_id,
        created_by=principal.id,
        name=body.name,
        expires_in=timedelta(days=body.expires_in_days),
    )
    audit_note(
        request, issued=row.id, expires_at=row.expires_at.isoformat() if row.expires_at else None
    )
    public = TokenPublic.model_validate(row)
    return TokenCreated(**public.model_dump(), token=token)


@router.get("/users/{user_id}/tokens", response_model=list[TokenPublic])
def user_tokens(
    user_id: IdPath,
    session: SessionDep,
    _: Annotated[Resource, Depends(require("token:list", user_tokens_resource))],
) -> list[TokenPublic]:
    """A user's tokens, revoked ones included (never the tokens themselves)."""
    _user(session, user_id)
    return [TokenPublic.model_validate(t) for t in list_tokens(session, principal_id=user_id)]


@router.delete("/tokens/{token_id}", response_model=TokenPublic)
def revoke(
    token_id: Annotated[str, Path(pattern=TOKEN_ID)],
    session: SessionDep,
    principal: CurrentPrincipal,
    _: Annotated[Resource, Depends(require("token:revoke", token_resource))],
) -> TokenPublic:
    """Revoke a token: requests with it are refused from now on."""
    return TokenPublic.model_validate(revoke_token(session, token_id=token_id, by=principal.id))
