"""API tokens of users and sites: issuing, revoking, and authenticating a request."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from fedvault.common.errors import AlreadyExists, AuthenticationFailed, ConfigError, NotFound
from fedvault.server.core.time import utcnow
from fedvault.server.identity._accounts import create_user
from fedvault.server.identity._common import as_utc, check_text, commit
from fedvault.server.identity.principal import Principal
from fedvault.server.identity.tables import (
    ApiToken,
    Membership,
    PrincipalType,
    Role,
    Site,
    SiteStatus,
    User,
)
from fedvault.server.identity.tokens import (
    new_token,
    new_token_id,
    token_digest,
    token_display_prefix,
    verify_digest,
    well_formed,
)

__all__ = [
    "AUTH_FAILED_MESSAGE",
    "authenticate",
    "bootstrap_admin",
    "get_token",
    "issue_token",
    "list_tokens",
    "revoke_token",
]

logger = logging.getLogger(__name__)

# One message for every cause, so an answer never tells which tokens or users exist.
AUTH_FAILED_MESSAGE = "Invalid or expired API token. Ask an admin for a new token."
# last_used_at is written at most this often per token: no database write per request.
_LAST_USED_RESOLUTION = timedelta(minutes=1)


def _check_principal_type(value: object) -> PrincipalType:
    if isinstance(value, str) and value in PrincipalType.__members__.values():
        return PrincipalType(value)
    allowed = ", ".join(p.value for p in PrincipalType)
    raise ConfigError(f"{value!r} is not a principal type; use one of: {allowed}.")


def issue_token(
    session: Session,
    *,
    pepper: bytes,
    principal_type: str,
    principal_id: str,
    created_by: str,
    name: str = "",
    expires_in: timedelta | None = None,
) -> tuple[str, ApiToken]:
    """Issue an API token to an enabled user or a registered site.

    Returns:
        (the plaintext token, shown once and never stored; its database row).

    Raises:
        NotFound: no such user or site.
        ConfigError: the user is disabled, the site revoked, ``expires_in`` not positive, or
            the name too long.
    """
    kind = _check_principal_type(principal_type)
    check_text(name, what="token name", max_len=200)
    if expires_in is not None and expires_in <= timedelta(0):
        raise ConfigError(f"A token's lifetime must be positive, not {expires_in}.")
    if kind == PrincipalType.USER:
        user = session.get(User, principal_id) if isinstance(principal_id, str) else None
        if user is None:
            raise NotFound(f"No user {principal_id!r}.")
        if user.disabled:
            raise ConfigError(f"The user {principal_id!r} is disabled; enable them first.")
    else:
        site = session.get(Site, principal_id) if isinstance(principal_id, str) else None
        if site is None:
            raise NotFound(f"No site {principal_id!r}.")
        if site.status != SiteStatus.REGISTERED:
            raise ConfigError(f"The site {principal_id!r} is revoked; it gets no new tokens.")
    token = new_token()
    now = utcnow()
    row = ApiToken(
        id=new_token_id(),
        digest=token_digest(token, pepper),
        prefix=token_display_prefix(token),
        principal_type=kind.value,
        principal_id=principal_id,
        name=name,
        created_by=created_by,
        created_at=now,
        expires_at=None if expires_in is None else now + expires_in,
    )
    session.add(row)
    commit(session, conflict="A token id collided; issue the token again.")
    session.refresh(row)
    return token, row


def get_token(session: Session, token_id: str) -> ApiToken:
    """The token row ``token_id``; NotFound if there is none."""
    row = session.get(ApiToken, token_id) if isinstance(token_id, str) else None
    if row is None:
        raise NotFound(f"No API token {token_id!r}.")
    return row


def list_tokens(session: Session, *, principal_id: str | None = None) -> list[ApiToken]:
    """All token rows (of ``principal_id``, if given), oldest first; revoked ones included."""
    query = select(ApiToken).order_by(col(ApiToken.created_at), col(ApiToken.id))
    if principal_id is not None:
        query = query.where(ApiToken.principal_id == principal_id)
    return list(session.exec(query))


def revoke_token(session: Session, *, token_id: str, by: str) -> ApiToken:
    """Revoke a token at once (no change if it is revoked already); NotFound if unknown."""
    row = get_token(session, token_id)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
        session.commit()
        session.refresh(row)
        logger.info("API token %s revoked by %s", token_id, by)
    return row


def _user_principal(session: Session, row: ApiToken) -> Principal:
    user = session.get(User, row.principal_id)
    if user is None or user.disabled:
        raise AuthenticationFailed(AUTH_FAILED_MESSAGE)
    projects = session.exec(
        select(Membership.project_id).where(Membership.user_id == user.id)
    ).all()
    return Principal(
        type=PrincipalType.USER,
        id=user.id,
        role=user.role,
        projects=frozenset(projects),
        site_id=user.site_id,
        token_id=row.id,
    )


def _site_principal(session: Session, row: ApiToken) -> Principal:
    site = session.get(Site, row.principal_id)
    if site is None or site.status != SiteStatus.REGISTERED:
        raise AuthenticationFailed(AUTH_FAILED_MESSAGE)
    return Principal(
        type=PrincipalType.SITE,
        id=site.id,
        role=None,
        projects=frozenset(),
        site_id=site.id,
        token_id=row.id,
    )


def authenticate(
    session: Session, *, token: str, pepper: bytes, now: datetime | None = None
) -> Principal:
    """The principal holding ``token``.

    Raises:
        AuthenticationFailed: with the same message whether the token is malformed,
            unknown, expired or revoked, or its user is disabled or its site revoked.
    """
    return authenticate_until(session, token=token, pepper=pepper, now=now)[0]


def authenticate_until(
    session: Session, *, token: str, pepper: bytes, now: datetime | None = None
) -> tuple[Principal, datetime | None]:
    """``authenticate``, also returning when the token expires (None: never).

    Raises:
        AuthenticationFailed: as ``authenticate``.
    """
    if not well_formed(token):
        raise AuthenticationFailed(AUTH_FAILED_MESSAGE)
    now = as_utc(now) or utcnow()
    digest = token_digest(token, pepper)
    row = session.exec(select(ApiToken).where(ApiToken.digest == digest)).first()
    if row is None or not verify_digest(token, row.digest, pepper):
        raise AuthenticationFailed(AUTH_FAILED_MESSAGE)
    expires_at = as_utc(row.expires_at)
    if row.revoked_at is not None or (expires_at is not None and expires_at <= now):
        raise AuthenticationFailed(AUTH_FAILED_MESSAGE)
    if row.principal_type == PrincipalType.USER:
        principal = _user_principal(session, row)
    elif row.principal_type == PrincipalType.SITE:
        principal = _site_principal(session, row)
    else:
        raise AuthenticationFailed(AUTH_FAILED_MESSAGE)
    last_used = as_utc(row.last_used_at)
    if last_used is None or now - last_used >= _LAST_USED_RESOLUTION:
        row.last_used_at = now
        session.add(row)
        session.commit()
    return principal, expires_at


def bootstrap_admin(session: Session, *, pepper: bytes, user_id: str = "admin") -> str | None:
    """Create the first admin and return their token, if there are no users yet.

    Returns:
        The plaintext token (show it once), or None when users exist already.
    """
    if session.exec(select(User.id).limit(1)).first() is not None:
        return None
    try:
        create_user(
            session,
            user_id=user_id,
            role=Role.ADMIN.value,
            created_by="fedvault",
            display_name="First administrator",
        )
    except AlreadyExists:
        return None  # another process bootstrapped at the same moment
    token, _row = issue_token(
        session,
        pepper=pepper,
        principal_type=PrincipalType.USER.value,
        principal_id=user_id,
        created_by="fedvault",
        name="bootstrap",
    )
    return token
