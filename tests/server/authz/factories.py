"""Callers of every role, and resources, as the policy engine sees them."""

from __future__ import annotations

from fedvault.server.authz.engine import Resource
from fedvault.server.identity.principal import Principal
from fedvault.server.identity.tables import PrincipalType


def user(role: str, user_id: str | None = None, *, projects: tuple[str, ...] = (), site=None):
    """A user with ``role``, member of ``projects``; ``site`` for site operators."""
    return Principal(
        PrincipalType.USER, user_id or f"{role}-1", role, frozenset(projects), site_id=site
    )


def site(site_id: str = "hospital-a") -> Principal:
    """A site's agent."""
    return Principal(PrincipalType.SITE, site_id, None, frozenset(), site_id=site_id)


def model(project: str = "alpha", *, export_allowed: bool = True) -> Resource:
    """A model of ``project``."""
    return Resource("Model", "mnist-cnn", project=project, attrs={"export_allowed": export_allowed})


def run(project: str = "alpha") -> Resource:
    """A run of ``project``."""
    return Resource("Run", "17", project=project)


def project(name: str = "alpha") -> Resource:
    """A project (it is its own project)."""
    return Resource("Project", name, project=name)


def token(owner: str, *, owner_type: str = "user") -> Resource:
    """A token owned by ``owner``."""
    return Resource("Token", "tok123", attrs={"owner": owner, "owner_type": owner_type})
