"""One place mapping errors to HTTP answers: ``{"error": {"code", "message", "request_id"}}``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fedvault.common.errors import (
    AlreadyExists,
    AuthenticationFailed,
    FederationError,
    FedvaultError,
    IntegrityError,
    KeyMaterialError,
    NotFound,
    PolicyDenied,
    PolicyRefused,
    RateLimited,
    StorageError,
)

__all__ = ["error_response", "install_error_handlers", "internal_error_response", "request_id_of"]

log = logging.getLogger("fedvault.server.api")

# Most specific first: AlreadyExists is also a ValueError, RateLimited a FedvaultError.
_STATUS: tuple[tuple[type[BaseException], int, str], ...] = (
    (AuthenticationFailed, 401, "unauthenticated"),
    (PolicyDenied, 403, "forbidden"),
    (NotFound, 404, "not_found"),
    (AlreadyExists, 409, "already_exists"),
    (PolicyRefused, 409, "refused"),
    (RateLimited, 429, "rate_limited"),
    (FederationError, 503, "federation_unavailable"),
    (StorageError, 503, "storage_unavailable"),
    (IntegrityError, 500, "integrity_error"),
    (KeyMaterialError, 500, "key_material_error"),
    (ValueError, 422, "invalid"),  # ConfigError, DataError: bad values in the request
    (FedvaultError, 500, "server_error"),
)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
    503: "unavailable",
}


def request_id_of(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def error_response(
    request: Request,
    *,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    fields: list[str] | None = None,
) -> JSONResponse:
    """The error body, remembering the reason for the request's audit event."""
    request.state.error_reason = message[:500]
    error: dict[str, Any] = {"code": code, "message": message, "request_id": request_id_of(request)}
    if fields is not None:
        error["fields"] = fields
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def internal_error_response(request_id: str | None) -> JSONResponse:
    """The answer to an unexpected exception: no details, only the id to quote."""
    message = f"Internal error; quote request id {request_id} to the operator."
    error = {"code": "internal_error", "message": message, "request_id": request_id}
    return JSONResponse({"error": error}, status_code=500)


def _status_of(exc: BaseException) -> tuple[int, str]:
    for kind, status, code in _STATUS:
        if isinstance(exc, kind):
            return status, code
    return 500, "server_error"


async def _fedvault_error(request: Request, exc: Exception) -> JSONResponse:
    status, code = _status_of(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, AuthenticationFailed):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(max(1, int(exc.retry_after)))
    if status >= 500:
        log.error("%s answered %d: %s", request.url.path, status, exc)
    return error_response(request, status=status, code=code, message=str(exc), headers=headers)


def _where(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc) or "request"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    broken = [e for e in errors if e.get("type") == "json_invalid"]
    if broken:
        problem = broken[0].get("ctx", {}).get("error", "JSON decode error")
        return error_response(
            request,
            status=400,
            code="invalid_json",
            message=f"Request body is not valid JSON: {problem}.",
        )
    fields = [f"{_where(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors[:10]]
    message = "Invalid request: " + "; ".join(fields)
    return error_response(request, status=422, code="invalid", message=message, fields=fields)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    code = _HTTP_CODES.get(status, "error" if status < 500 else "server_error")
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if status == 404 and message == "Not Found":
        message = f"No endpoint {request.method} {request.url.path}; see /docs for the API."
    elif status == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}."
    return error_response(
        request, status=status, code=code, message=message, headers=dict(exc.headers or {})
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app`` (unexpected exceptions: ``RequestContext``)."""
    app.add_exception_handler(FedvaultError, _fedvault_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
