"""ASGI middleware: request ids, security headers, body size limit, and one audit event each."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fedvault.common.errors import ConfigError, FedvaultError
from fedvault.server.api.deps import AuditNote
from fedvault.server.api.errors import error_response, internal_error_response
from fedvault.server.audit.tables import Outcome

__all__ = ["AuditMiddleware", "BodySizeLimit", "RequestContext"]

log = logging.getLogger("fedvault.server.api")

_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")
_NOT_AUDITED = frozenset({"/v1/health"})
_READS = frozenset({"GET", "HEAD", "OPTIONS"})
_DOCS = ("/docs", "/redoc")
_SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
)
_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
_HSTS = (b"strict-transport-security", b"max-age=31536000")


def _state(scope: Scope) -> dict[str, Any]:
    return scope.setdefault("state", {})  # type: ignore[no-any-return]


class RequestContext:
    """Outermost: request id (``X-Request-ID`` in and out), security headers, and a 500
    with only the request id for any exception nothing else answered."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id", "")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        _state(scope)["request_id"] = request_id
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                headers["x-request-id"] = request_id
                for name, value in _SECURITY_HEADERS:
                    headers.setdefault(name.decode(), value.decode())
                if not scope["path"].startswith(_DOCS):
                    headers.setdefault(_CSP[0].decode(), _CSP[1].decode())
                if scope.get("scheme") == "https":
                    headers.setdefault(_HSTS[0].decode(), _HSTS[1].decode())
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            log.exception("Unexpected error (request id %s)", request_id)
            if started:
                raise
            await internal_error_response(request_id)(scope, receive, send_with_headers)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"The request body is larger than {limit} bytes; send less.")


class BodySizeLimit:
    """Refuse bodies over ``max_bytes``: by Content-Length at once, or while they stream."""

    def __init__(self, app: ASGIApp, *, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._refuse(scope, receive, send, bad_length=not length.isdigit())
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counting_receive, send)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, *, bad_length: bool
    ) -> None:
        request = Request(scope, receive)
        if bad_length:
            message = "The Content-Length header is not a whole number of bytes."
            response = error_response(request, status=400, code="bad_request", message=message)
        else:
            message = BodyTooLarge(self.max_bytes).detail
            response = error_response(request, status=413, code="body_too_large", message=message)
        await response(scope, receive, send)


def _outcome(status: int, note: AuditNote) -> Outcome:
    if note.hidden or status in (401, 403, 429):
        return Outcome.DENIED
    if status < 400:
        return Outcome.ALLOWED
    return Outcome.FAILED


def _clean(text: str, limit: int) -> str:
    return _UNPRINTABLE.sub("?", text)[:limit] or "?"


def _template(scope: Scope) -> str | None:
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else None


def _route_path(scope: Scope) -> str:
    return _template(scope) or _clean(scope["path"], 200)


def event_fields(scope: Scope, status: int) -> dict[str, Any]:
    """The audit event of a finished request (see the module docstring of ``deps``)."""
    state = _state(scope)
    note = state.get("audit") or AuditNote()
    principal = state.get("principal")
    method, path = scope["method"], _route_path(scope)
    outcome = _outcome(status, note)
    details: dict[str, Any] = {**note.details, "method": method, "path": path, "status": status}
    if outcome is not Outcome.ALLOWED and state.get("error_reason"):
        details["reason"] = state["error_reason"]
    resource = note.resource
    policy = None
    if note.decision is not None:
        names = note.decision.policy or "default-deny"
        hashed = f"{names} @{note.policy_set[:16]}" if note.policy_set else names
        policy = _clean(hashed, 256)
    client = scope.get("client")
    return {
        "actor": principal.id if principal else "anonymous",
        "actor_type": str(principal.type) if principal else "anonymous",
        "action": (note.action or "api.request").replace(":", "."),
        "resource_type": resource.type.lower() if resource else "endpoint",
        "resource_id": _clean(resource.id, 256) if resource else _clean(f"{method} {path}", 256),
        "project": resource.project if resource else None,
        "outcome": outcome,
        "policy": policy,
        "source": _clean(client[0], 128) if client else None,
        "request_id": state.get("request_id"),
        "details": details,
    }


class AuditMiddleware:
    """One audit event per request (not ``GET /v1/health``), committed before the answer
    starts; if it cannot be committed the answer is a 503 instead of the handler's."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _NOT_AUDITED:
            await self.app(scope, receive, send)
            return
        services = scope["app"].state.services
        _state(scope).setdefault("audit", AuditNote())
        begun = time.perf_counter()
        refused = started = False

        async def audited_send(message: Message) -> None:
            nonlocal refused, started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                if scope["method"] not in _READS:
                    # Whatever changed (a revoked token, a new member) applies to the next
                    # request at once: forget the principals resolved so far.
                    services.principals.clear()
                services.metrics.observe(
                    method=scope["method"],
                    route=_template(scope) or "unmatched",  # bounded label values
                    status=status,
                    seconds=time.perf_counter() - begun,
                )
                if not await self._record(scope, status, services):
                    refused = True
                    await _unavailable(scope, send)
                    return
            await send(message)

        try:
            await self.app(scope, receive, audited_send)
        except Exception:
            if not started:  # RequestContext answers 500; the event says so first
                _state(scope).setdefault("error_reason", "internal error")
                await self._record(scope, 500, services)
            raise

    @staticmethod
    async def _record(scope: Scope, status: int, services: Any) -> bool:
        fields = event_fields(scope, status)
        try:
            try:
                await services.audit.append_async(**fields)
            except ConfigError as e:
                # A handler noted details the log refuses (e.g. a secret-looking key): the
                # event is still recorded, with the details the middleware itself knows.
                log.error("Audit details refused, recorded without them: %s", e)
                details = {k: fields["details"][k] for k in ("method", "path", "status")}
                details["details_refused"] = True
                await services.audit.append_async(**(fields | {"details": details}))
        except FedvaultError as e:
            log.error("Audit event not recorded; answering 503: %s", e)
            return False
        return True


async def _unavailable(scope: Scope, send: Send) -> None:
    request_id = _state(scope).get("request_id")
    message = "The audit log could not record this request, so it was not answered; retry later."
    body = {"error": {"code": "audit_unavailable", "message": message, "request_id": request_id}}
    response = JSONResponse(body, status_code=503)

    async def nothing() -> Message:
        return {"type": "http.disconnect"}

    await response(scope, nothing, send)
