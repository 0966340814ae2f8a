"""Authorization: Cedar policies decide every admin API action."""

from __future__ import annotations

from fedvault.server.authz.engine import (
    AUDIT_LOG,
    RESOURCE_TYPES,
    SERVER,
    Decision,
    PolicyEngine,
    Resource,
)
from fedvault.server.authz.tables import PolicyVersion

__all__ = [
    "AUDIT_LOG",
    "RESOURCE_TYPES",
    "SERVER",
    "Decision",
    "PolicyEngine",
    "PolicyVersion",
    "Resource",
]
