"""Who may call the admin API: users, sites, projects and their API tokens."""

from __future__ import annotations

from fedvault.server.identity.pepper import ensure_pepper, load_pepper
from fedvault.server.identity.principal import Principal
from fedvault.server.identity.ratelimit import FailedLoginLimiter
from fedvault.server.identity.service import (
    AUTH_FAILED_MESSAGE,
    add_member,
    add_site,
    authenticate,
    authenticate_until,
    bootstrap_admin,
    create_project,
    create_user,
    get_project,
    get_site,
    get_token,
    get_user,
    issue_token,
    list_projects,
    list_sites,
    list_tokens,
    list_users,
    members,
    remove_member,
    revoke_site,
    revoke_token,
    set_disabled,
    set_site_node,
)
from fedvault.server.identity.tables import (
    ApiToken,
    Membership,
    PrincipalType,
    Project,
    Role,
    Site,
    SiteStatus,
    User,
)
from fedvault.server.identity.tokens import new_token, token_digest, well_formed

__all__ = [
    "Principal",
    # tables
    "ApiToken",
    "Membership",
    "PrincipalType",
    "Project",
    "Role",
    "Site",
    "SiteStatus",
    "User",
    # tokens and the pepper
    "new_token",
    "token_digest",
    "well_formed",
    "ensure_pepper",
    "load_pepper",
    "FailedLoginLimiter",
    # service
    "AUTH_FAILED_MESSAGE",
    "add_member",
    "add_site",
    "authenticate",
    "authenticate_until",
    "bootstrap_admin",
    "create_project",
    "create_user",
    "get_project",
    "get_site",
    "get_token",
    "get_user",
    "issue_token",
    "list_projects",
    "list_sites",
    "list_tokens",
    "list_users",
    "members",
    "remove_member",
    "revoke_site",
    "revoke_token",
    "set_disabled",
    "set_site_node",
]
