"""One router per resource, their routes collected here into ``api_router``.

Each module defines ``router = APIRouter(prefix="/v1", tags=[...])`` with its own paths.
"""

from __future__ import annotations

import importlib
import importlib.util

from fastapi import APIRouter
from starlette.routing import BaseRoute

__all__ = ["ROUTER_MODULES", "api_router"]

ROUTER_MODULES = (
    "health",
    "users",
    "projects",
    "policies",
    "sites",
    "runs",
    "models",
    "audit",
)


def _collect() -> APIRouter:
    """One router holding every resource router's routes, flat.

    Each module's routes already carry its prefix, tags and responses. FastAPI keeps
    included routers nested and matches a request against every level, so the modules'
    routers are not included one by one; the app includes this one (which also links its
    routes to the app's ``dependency_overrides``).
    """
    routes: list[BaseRoute] = []
    for name in ROUTER_MODULES:
        module_name = f"{__name__}.{name}"
        # A resource whose module is not installed is left out rather than failing the app.
        if importlib.util.find_spec(module_name) is None:
            continue
        routes.extend(importlib.import_module(module_name).router.routes)
    return APIRouter(routes=routes)


api_router = _collect()
