"""The authenticated caller of the admin API: a user or a site, with what it belongs to."""

from __future__ import annotations

from dataclasses import dataclass

from fedvault.server.identity.tables import PrincipalType, Role

__all__ = ["Principal"]


@dataclass(frozen=True)
class Principal:
    """Who is making a request, as the access policies see them.

    Attributes:
        type: ``user`` for a person, ``site`` for a site's agent.
        id: The login name or the site id.
        role: The user's ``Role`` value; None for sites.
        projects: The projects the user is a member of (empty for sites).
        site_id: For site operators, their site; for sites, themselves.
        token_id: The public id of the token used for this request, if any.
    """

    type: PrincipalType
    id: str
    role: str | None
    projects: frozenset[str]
    site_id: str | None = None
    token_id: str | None = None

    @property
    def is_user(self) -> bool:
        """True when the caller is a person."""
        return bool(self.type == PrincipalType.USER)

    @property
    def is_site(self) -> bool:
        """True when the caller is a site's agent."""
        return bool(self.type == PrincipalType.SITE)

    @property
    def is_admin(self) -> bool:
        """True when the caller is a user with the admin role."""
        return self.is_user and self.role == Role.ADMIN
