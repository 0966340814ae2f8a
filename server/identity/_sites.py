"""Sites of the federation: their node public keys, Flower node ids and revocation."""

from __future__ import annotations

import base64
import hashlib
import logging

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlmodel import Session, col, select

from fedvault.common.errors import AlreadyExists, ConfigError
from fedvault.server.core.time import utcnow
from fedvault.server.identity._common import check_id, check_text, commit, require
from fedvault.server.identity.tables import ApiToken, PrincipalType, Site, SiteStatus

__all__ = [
    "add_site",
    "get_site",
    "list_sites",
    "normalize_node_key",
    "revoke_site",
    "set_site_node",
]

logger = logging.getLogger(__name__)

# Flower's node authentication takes ECDSA keys on a NIST curve; OpenSSH knows these three.
_NIST_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_KEY_HINT = (
    "Give the site's node public key as one OpenSSH line, e.g. "
    "'ecdsa-sha2-nistp384 AAAA... site-1' (the .pub file `fedvault site init` writes)."
)
_MAX_KEY_CHARS = 4096


def normalize_node_key(public_key: str) -> tuple[str, str]:
    """Check a node public key and return it as a clean OpenSSH line with its fingerprint.

    Returns:
        (``"ecdsa-sha2-nistp... AAAA..."`` without comment, ``"SHA256:..."`` as ssh-keygen
        prints it).

    Raises:
        ConfigError: not an OpenSSH public key, or not ECDSA on a NIST curve.
    """
    if not isinstance(public_key, str):
        raise ConfigError(f"The public key must be text. {_KEY_HINT}")
    line = public_key.strip()
    if not line or "\n" in line or "\r" in line or len(line) > _MAX_KEY_CHARS:
        raise ConfigError(f"The public key must be a single OpenSSH line. {_KEY_HINT}")
    try:
        key = serialization.load_ssh_public_key(line.encode("ascii"))
    except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError) as e:
        raise ConfigError(
            f"The public key is not a valid OpenSSH public key ({e}). {_KEY_HINT}"
        ) from e
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, _NIST_CURVES):
        kind = line.split(maxsplit=1)[0]
        raise ConfigError(
            f"The public key is of type {kind!r}; Flower's node authentication needs an "
            "ECDSA key on a NIST curve (ecdsa-sha2-nistp256, -nistp384 or -nistp521). " + _KEY_HINT
        )
    openssh = key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode("ascii")
    blob = base64.b64decode(openssh.split()[1])
    fingerprint = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return openssh, fingerprint


def add_site(
    session: Session, *, site_id: str, public_key: str, created_by: str, description: str = ""
) -> Site:
    """Record a new site with its node public key (status ``registered``).

    Raises:
        ConfigError: a bad id, description or public key.
        AlreadyExists: a site with this id (even a revoked one) or this key exists.
    """
    check_id(site_id, what="site")
    check_text(description, what="description", max_len=1000)
    openssh, fingerprint = normalize_node_key(public_key)
    existing = session.get(Site, site_id)
    if existing is not None:
        state = " (revoked)" if existing.status == SiteStatus.REVOKED else ""
        raise AlreadyExists(f"A site {site_id!r}{state} exists already; pick another site id.")
    holder = session.exec(select(Site.id).where(Site.fingerprint == fingerprint)).first()
    if holder is not None:
        raise AlreadyExists(
            f"This public key ({fingerprint}) belongs to the site {holder!r} already; every "
            "site needs its own node key."
        )
    site = Site(
        id=site_id,
        description=description,
        public_key=openssh,
        fingerprint=fingerprint,
        created_by=created_by,
    )
    session.add(site)
    commit(session, conflict=f"A site {site_id!r} or one with this key exists already.")
    session.refresh(site)
    return site


def get_site(session: Session, site_id: str) -> Site:
    """The site ``site_id``; NotFound if there is none."""
    return require(session, Site, site_id, what="site")


def list_sites(session: Session, *, status: str | None = None) -> list[Site]:
    """All sites (with ``status``, if given), by id."""
    query = select(Site).order_by(col(Site.id))
    if status is not None:
        try:
            query = query.where(Site.status == SiteStatus(status).value)
        except ValueError:
            allowed = ", ".join(s.value for s in SiteStatus)
            raise ConfigError(f"{status!r} is not a site status; use one of: {allowed}.") from None
    return list(session.exec(query))


def set_site_node(session: Session, *, site_id: str, node_id: int | None) -> Site:
    """Store the Flower node id the SuperLink gave the site's key (None to clear it)."""
    site = get_site(session, site_id)
    if node_id is not None and (isinstance(node_id, bool) or not isinstance(node_id, int)):
        raise ConfigError(f"A node id is a whole number, not {node_id!r}.")
    if node_id is not None and not 0 <= node_id < 1 << 64:
        raise ConfigError(f"A node id is an unsigned 64-bit integer, not {node_id}.")
    site.node_id = node_id
    session.add(site)
    session.commit()
    session.refresh(site)
    return site


def revoke_site(session: Session, *, site_id: str, by: str) -> Site:
    """Revoke a site and every API token it holds (no change if it is revoked already).

    Raises:
        NotFound: no such site.
    """
    site = get_site(session, site_id)
    if site.status == SiteStatus.REVOKED:
        return site
    now = utcnow()
    site.status = SiteStatus.REVOKED.value
    site.revoked_at = now
    session.add(site)
    tokens = session.exec(
        select(ApiToken).where(
            ApiToken.principal_type == PrincipalType.SITE.value,
            ApiToken.principal_id == site_id,
            col(ApiToken.revoked_at).is_(None),
        )
    )
    for token in tokens:
        token.revoked_at = now
        session.add(token)
    session.commit()
    session.refresh(site)
    logger.info("site %s revoked by %s", site_id, by)
    return site
