"""One router per resource, collected here into ``api_router``.

Each module defines ``router = APIRouter(prefix="/v1", tags=[...])`` with its own paths.
"""

from __future__ import annotations

import importlib
import importlib.util

from starlette.routing import BaseRoute

__all__ = ["ROUTER_MODULES", "api_routes"]

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


def api_routes() -> list[BaseRoute]:
    """Every resource router's routes, in one flat list for the app's own router.

    Each module's routes already carry its prefix, tags and responses. Included routers
    would stay nested, and every request would be matched against each level in turn.
    """
    routes: list[BaseRoute] = []
    for name in ROUTER_MODULES:
        module_name = f"{__name__}.{name}"
        # A resource whose module is not installed is left out rather than failing the app.
        if importlib.util.find_spec(module_name) is None:
            continue
        routes.extend(importlib.import_module(module_name).router.routes)
    return routes
