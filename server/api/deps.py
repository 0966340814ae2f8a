"""What handlers depend on: the session, the services, the caller, and policy decisions.

A router asks for what it needs by annotation and authorizes with ``require``::

    router = APIRouter(prefix="/v1", tags=["models"])

    def model_resource(model_id: str, services: ServicesDep) -> Resource:
        ...  # load it; unknown -> raise not_found("Model", model_id)
        return Resource("Model", model_id, project=..., attrs={"export_allowed": ...})

    @router.get("/models/{model_id}")
    def read_model(resource: Annotated[Resource, Depends(require("model:read", model_resource))],
                   services: ServicesDep, request: Request) -> ModelPublic:
        audit_note(request, version=3)   # extra details for this request's audit event
        ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from fedvault.common.errors import AuthenticationFailed, NotFound, PolicyDenied, RateLimited
from fedvault.server.api.services import Services
from fedvault.server.authz.engine import SERVER, Decision, Resource
from fedvault.server.core.settings import ServerSettings
from fedvault.server.identity import Principal, Role, authenticate_until
from fedvault.server.identity.tokens import token_digest

__all__ = [
    "AuditNote",
    "CurrentPrincipal",
    "ServicesDep",
    "SessionDep",
    "SettingsDep",
    "audit_note",
    "audit_state",
    "client_address",
    "current_principal",
    "get_services",
    "get_session",
    "get_settings",
    "not_found",
    "require",
]

MISSING_TOKEN = "No API token: send 'Authorization: Bearer <token>'. Ask an admin for a token."  # noqa: S105 -- a message
# Callers who see every project's objects, so a denial is no secret to them.
_SEE_ALL = frozenset({Role.ADMIN.value, Role.AUDITOR.value})

_bearer = HTTPBearer(auto_error=False, description="An API token (fvt_...).")


@dataclass
class AuditNote:
    """What a request did, for its audit event: filled in by ``require`` and handlers.

    Attributes:
        action: the policy action decided (``model:download``), or ``auth.login`` when a
            token was refused; None when nothing was decided (the event says api.request).
        resource: the resource the action was decided on.
        decision: the policy engine's decision.
        policy_set: the hash of the policy set that decided.
        hidden: a denial answered 404 because the resource's project is not the caller's.
        details: extra details for the event (never secrets).
    """

    action: str | None = None
    resource: Resource | None = None
    decision: Decision | None = None
    policy_set: str | None = None
    hidden: bool = False
    details: dict[str, Any] = field(default_factory=dict)


def audit_state(request: Request) -> AuditNote:
    """The request's ``AuditNote`` (created on first use)."""
    note = getattr(request.state, "audit", None)
    if note is None:
        note = AuditNote()
        request.state.audit = note
    return note


def audit_note(request: Request, **details: Any) -> None:
    """Add details (JSON values, no secrets) to this request's audit event."""
    audit_state(request).details.update(details)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_services(request: Request) -> Services:
    return _services(request)


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_settings(services: ServicesDep) -> ServerSettings:
    """The app's settings (override with ``app.dependency_overrides[get_settings]``)."""
    return services.settings


SettingsDep = Annotated[ServerSettings, Depends(get_settings)]


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One database session per request, closed when the handler returns.

    Closed before the response starts (``scope="function"``), so a connection is never
    held while the request's audit event is being committed. Creating and closing a
    session is cheap and needs no worker thread; the queries run in the handlers'.
    """
    # The request's own dependencies take the services from the app, not from a
    # dependency of their own: each dependency FastAPI solves costs the event loop.
    with Session(_services(request).engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def _authenticate(services: Services, token: str) -> tuple[Principal, datetime | None]:
    with Session(services.engine) as session:
        return authenticate_until(session, token=token, pepper=services.pepper)


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller named by the request's Bearer token.

    A token seen in the last moments is answered from ``services.principals`` without a
    database lookup (see ``PrincipalCache`` for how long a change may take to apply).

    Raises:
        AuthenticationFailed: no token, or one that is malformed, unknown, expired or revoked
            (answered 401 with ``WWW-Authenticate: Bearer``; one message for every cause).
        RateLimited: this address failed too often in the last minute (429, Retry-After).
    """
    if credentials is None:
        raise AuthenticationFailed(MISSING_TOKEN)
    services = _services(request)
    source = client_address(request)
    note = audit_state(request)
    token = credentials.credentials
    try:
        services.limiter.check(source)
        digest = token_digest(token, services.pepper)
        cached = services.principals.get(digest)
        if cached is None:
            principal, expires_at = await run_in_threadpool(_authenticate, services, token)
            services.principals.put(digest, principal, expires_at=expires_at)
        else:
            principal = cached
    except AuthenticationFailed:
        services.limiter.record_failure(source)
        note.action = "auth.login"
        raise
    except RateLimited:
        note.action = "auth.login"
        raise
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def not_found(resource_type: str, resource_id: str) -> NotFound:
    """The one 404 for ``resource_type``: for objects that do not exist and hidden ones alike.

    Resolvers and handlers raise this (not the service's own NotFound) so that a caller
    cannot tell another project's object from a missing one.
    """
    return NotFound(
        f"{resource_type} '{resource_id}' was not found. Check the id; objects of projects "
        "you are not a member of are not shown."
    )


async def _server() -> Resource:
    return SERVER


def _hidden(principal: Principal, resource: Resource) -> bool:
    """A denial to hide as 404: the resource's project is not the caller's."""
    return (
        resource.project is not None
        and resource.project not in principal.projects
        and principal.role not in _SEE_ALL
    )


# A resolver: a plain or async dependency that builds the Resource from path parameters.
Resolver = Callable[..., Resource] | Callable[..., Awaitable[Resource]]


def require(action: str, resource: Resolver | None = None) -> Callable[..., Awaitable[Resource]]:
    """A dependency that authorizes ``action`` on a resource and returns the resource.

    The decision runs on the event loop: it is CPU work of a fraction of a millisecond, and a
    worker-thread hop per dependency would cost more than the decision itself.

    Args:
        action: the Cedar action, e.g. ``model:download``.
        resource: a dependency that builds the Resource from path parameters (it may load
            the object; raise ``not_found`` for unknown ids). Default: ``SERVER``. It runs
            after the caller is authenticated.

    The decision goes into the request's audit event. A denial is 403, or 404 (the same
    answer as ``not_found``) when the resource's project is not one of the caller's and
    the caller is neither admin nor auditor.
    """
    resolver = resource or _server

    async def authorized(
        request: Request,
        principal: CurrentPrincipal,
        target: Resource = Depends(resolver),  # noqa: B008 -- FastAPI's way to chain
    ) -> Resource:
        policy = _services(request).policy
        decision = policy.authorize(principal, action, target)
        note = audit_state(request)
        note.action, note.resource, note.decision = action, target, decision
        note.policy_set = policy.set_hash
        if decision.allowed:
            return target
        if _hidden(principal, target):
            note.hidden = True
            raise not_found(target.type, target.id)
        raise PolicyDenied(
            f"Access denied: {principal.id} may not {action} {target.type} '{target.id}'. "
            "Ask an admin if you need this access."
        )

    authorized.__name__ = f"require_{action.replace(':', '_').replace('-', '_')}"
    return authorized
