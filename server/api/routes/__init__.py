"""One router per resource, collected here into ``api_router``.

Each module defines ``router = APIRouter(prefix="/v1", tags=[...])`` with its own paths.
"""

from __future__ import annotations

import importlib
import importlib.util

from fastapi import APIRouter

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
    collected = APIRouter()
    for name in ROUTER_MODULES:
        module_name = f"{__name__}.{name}"
        # A resource whose module is not installed is left out rather than failing the app.
        if importlib.util.find_spec(module_name) is None:
            continue
        module = importlib.import_module(module_name)
        collected.include_router(module.router)
    return collected


api_router = _collect()
