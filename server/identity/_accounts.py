"""Users, projects and project membership."""

from __future__ import annotations

import logging

from sqlmodel import Session, col, select

from fedvault.common.errors import AlreadyExists, ConfigError, NotFound
from fedvault.server.identity._common import check_id, check_text, commit, require
from fedvault.server.identity.tables import Membership, Project, Role, Site, SiteStatus, User

__all__ = [
    "add_member",
    "create_project",
    "create_user",
    "get_project",
    "get_user",
    "list_projects",
    "list_users",
    "members",
    "remove_member",
    "set_disabled",
]

logger = logging.getLogger(__name__)
_ROLES = ", ".join(r.value for r in Role)


def _check_role(role: object) -> Role:
    if isinstance(role, str) and role in Role.__members__.values():
        return Role(role)
    raise ConfigError(f"{role!r} is not a role; use one of: {_ROLES}.")


def _check_user_site(session: Session, role: Role, site_id: str | None) -> None:
    if role != Role.SITE_OPERATOR:
        if site_id is not None:
            raise ConfigError(
                f"Only site operators belong to a site; a user with role {role.value!r} "
                "must not name one."
            )
        return
    if site_id is None:
        raise ConfigError("A site operator must name the site they operate (site_id).")
    site = session.get(Site, check_id(site_id, what="site"))
    if site is None:
        raise ConfigError(f"No site {site_id!r}; register the site before its operator.")
    if site.status != SiteStatus.REGISTERED:
        raise ConfigError(f"The site {site_id!r} is revoked; it cannot have new operators.")


def create_user(
    session: Session,
    *,
    user_id: str,
    role: str,
    created_by: str,
    display_name: str = "",
    site_id: str | None = None,
) -> User:
    """Create a user.

    Raises:
        ConfigError: a bad id, role or display name, or a site that does not fit the role
            (site operators must name a registered site; nobody else may name one).
        AlreadyExists: a user with this id exists.
    """
    check_id(user_id, what="user")
    the_role = _check_role(role)
    check_text(display_name, what="display name", max_len=200)
    _check_user_site(session, the_role, site_id)
    conflict = f"A user {user_id!r} exists already; pick another login name."
    if session.get(User, user_id) is not None:
        raise AlreadyExists(conflict)
    user = User(
        id=user_id,
        role=the_role.value,
        display_name=display_name,
        site_id=site_id,
        created_by=created_by,
    )
    session.add(user)
    commit(session, conflict=conflict)
    session.refresh(user)
    return user


def get_user(session: Session, user_id: str) -> User:
    """The user ``user_id``; NotFound if there is none."""
    return require(session, User, user_id, what="user")


def list_users(session: Session, *, role: str | None = None) -> list[User]:
    """All users (of ``role``, if given), by id."""
    query = select(User).order_by(col(User.id))
    if role is not None:
        query = query.where(User.role == _check_role(role).value)
    return list(session.exec(query))


def set_disabled(session: Session, *, user_id: str, disabled: bool, by: str) -> User:
    """Disable a user (their tokens stop working) or enable them again.

    Raises:
        NotFound: no such user.
        ConfigError: disabling the last enabled admin, which would lock everyone out.
    """
    user = get_user(session, user_id)
    if disabled and not user.disabled and user.role == Role.ADMIN:
        others = session.exec(
            select(User.id).where(
                User.role == Role.ADMIN.value, col(User.disabled).is_(False), User.id != user_id
            )
        ).first()
        if others is None:
            raise ConfigError(
                f"{user_id!r} is the last enabled admin; create or enable another admin first."
            )
    user.disabled = bool(disabled)
    session.add(user)
    session.commit()
    session.refresh(user)
    logger.info("user %s %s by %s", user_id, "disabled" if disabled else "enabled", by)
    return user


def create_project(
    session: Session, *, project_id: str, created_by: str, description: str = ""
) -> Project:
    """Create a project.

    Raises:
        ConfigError: a bad id or description.
        AlreadyExists: a project with this id exists.
    """
    check_id(project_id, what="project")
    check_text(description, what="description", max_len=1000)
    conflict = f"A project {project_id!r} exists already; pick another name."
    if session.get(Project, project_id) is not None:
        raise AlreadyExists(conflict)
    project = Project(id=project_id, description=description, created_by=created_by)
    session.add(project)
    commit(session, conflict=conflict)
    session.refresh(project)
    return project


def get_project(session: Session, project_id: str) -> Project:
    """The project ``project_id``; NotFound if there is none."""
    return require(session, Project, project_id, what="project")


def list_projects(session: Session, *, member: str | None = None) -> list[Project]:
    """All projects, or those ``member`` belongs to, by id."""
    query = select(Project).order_by(col(Project.id))
    if member is not None:
        query = query.join(Membership, col(Membership.project_id) == col(Project.id)).where(
            Membership.user_id == member
        )
    return list(session.exec(query))


def add_member(session: Session, *, project_id: str, user_id: str, by: str) -> Membership:
    """Make a user a member of a project (no change if they are one already).

    Raises:
        NotFound: no such project or user.
    """
    get_project(session, project_id)
    get_user(session, user_id)
    existing = session.get(Membership, (project_id, user_id))
    if existing is not None:
        return existing
    membership = Membership(project_id=project_id, user_id=user_id, added_by=by)
    session.add(membership)
    commit(session, conflict=f"{user_id!r} is a member of {project_id!r} already.")
    session.refresh(membership)
    return membership


def remove_member(session: Session, *, project_id: str, user_id: str, by: str) -> None:
    """Remove a user from a project.

    Raises:
        NotFound: no such project, or the user is not a member of it.
    """
    get_project(session, project_id)
    membership = session.get(Membership, (project_id, user_id))
    if membership is None:
        raise NotFound(f"{user_id!r} is not a member of the project {project_id!r}.")
    session.delete(membership)
    session.commit()
    logger.info("user %s removed from project %s by %s", user_id, project_id, by)


def members(session: Session, project_id: str) -> list[str]:
    """The ids of a project's members, sorted; NotFound if there is no such project."""
    get_project(session, project_id)
    query = (
        select(Membership.user_id)
        .where(Membership.project_id == project_id)
        .order_by(col(Membership.user_id))
    )
    return list(session.exec(query))
