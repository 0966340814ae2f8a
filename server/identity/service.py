"""The identity service: users, projects, sites and API tokens (Session first, then keywords)."""

from __future__ import annotations

from fedvault.server.identity._accounts import (
    add_member,
    create_project,
    create_user,
    get_project,
    get_user,
    list_projects,
    list_users,
    members,
    remove_member,
    set_disabled,
)
from fedvault.server.identity._auth import (
    AUTH_FAILED_MESSAGE,
    authenticate,
    authenticate_until,
    bootstrap_admin,
    get_token,
    issue_token,
    list_tokens,
    revoke_token,
)
from fedvault.server.identity._common import ID_PATTERN, check_id
from fedvault.server.identity._sites import (
    add_site,
    get_site,
    list_sites,
    normalize_node_key,
    revoke_site,
    set_site_node,
)

__all__ = [
    # users and projects
    "create_user",
    "get_user",
    "list_users",
    "set_disabled",
    "create_project",
    "get_project",
    "list_projects",
    "add_member",
    "remove_member",
    "members",
    # sites
    "add_site",
    "get_site",
    "list_sites",
    "set_site_node",
    "revoke_site",
    "normalize_node_key",
    # tokens
    "issue_token",
    "get_token",
    "list_tokens",
    "revoke_token",
    "authenticate",
    "authenticate_until",
    "bootstrap_admin",
    "AUTH_FAILED_MESSAGE",
    # identifiers
    "ID_PATTERN",
    "check_id",
]
