"""The admin API application: ``create_app`` builds it (``uvicorn --factory`` calls it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from fedvault.server.api.errors import install_error_handlers
from fedvault.server.api.middleware import AuditMiddleware, BodySizeLimit, RequestContext
from fedvault.server.api.routes import api_router
from fedvault.server.api.services import close_services, open_services
from fedvault.server.core.settings import ServerSettings, get_settings

__all__ = ["create_app"]

DESCRIPTION = (
    "Administer a fedvault federation: users, projects, sites, runs, encrypted models, "
    "access policies and the audit trail. Every call needs `Authorization: Bearer <token>` "
    "(except /v1/health), is decided by the access policies and recorded in the audit log."
)


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    """The admin API over the data directory and database ``settings`` name.

    The services (database, audit log, model store, policy engine, token pepper, federation
    client) are opened when the app starts and kept on ``app.state.services``.

    Args:
        settings: defaults to the process's settings (``FEDVAULT_*`` variables).
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await run_in_threadpool(open_services, settings)
        app.state.services = services
        try:
            yield
        finally:
            await run_in_threadpool(close_services, services)

    app = FastAPI(
        title="fedvault admin API",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.include_router(api_router)
    # add_middleware wraps what is there: the last added runs first.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(AuditMiddleware)
    app.add_middleware(RequestContext)
    return app
