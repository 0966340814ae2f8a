"""Open the audit log of a data directory, and name the local user who acts from a shell."""

from __future__ import annotations

import getpass
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from fedvault.common.errors import FedvaultError, KeyMaterialError
from fedvault.server.audit._chain import CHECKPOINTS
from fedvault.server.audit.signing import KEY_FILE, PublicKey, SigningKey
from fedvault.server.audit.tables import Outcome
from fedvault.server.audit.writer import AuditLog, EventFields
from fedvault.server.core.db import open_database
from fedvault.server.core.settings import ServerSettings

__all__ = [
    "LOCAL_USER",
    "audited_local_action",
    "ensure_signing_key",
    "local_actor",
    "open_audit_log",
    "open_signing_key",
    "public_key_of",
]

log = logging.getLogger("fedvault.server.audit")

LOCAL_USER = "local-user"  # actor type of whoever runs the CLI on the server machine


def local_actor() -> str:
    """The operating-system user running this process."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (e.g. a bare container)
        return f"uid:{os.getuid()}"


def ensure_signing_key(data_dir: Path) -> Path:
    """Create the data directory's audit signing key (0600) if it has none yet."""
    path = data_dir / KEY_FILE
    if not path.exists():
        SigningKey.create(path)
    return path


def open_signing_key(data_dir: Path, engine: Engine) -> SigningKey:
    """The data directory's signing key; created if missing and nothing was signed yet.

    Raises:
        KeyMaterialError: the key is unsafe or unreadable, or it is missing although the
            log holds checkpoints it signed (restore it rather than start a new identity).
    """
    path = data_dir / KEY_FILE
    if path.exists():
        return SigningKey.load(path)
    with engine.connect() as conn:
        signed = conn.execute(select(func.count()).select_from(CHECKPOINTS)).scalar_one()
    if signed:
        raise KeyMaterialError(
            f"The audit log holds {signed} signed checkpoint(s) but the key that signed "
            f"them is missing from {path}. Restore it from backup; a new key would make "
            "the log unverifiable with the public key auditors hold."
        )
    log.info("Creating the audit signing key %s", path)
    return SigningKey.create(path)


def public_key_of(data_dir: Path) -> PublicKey:
    """The public half of the data directory's signing key."""
    return SigningKey.load(data_dir / KEY_FILE).public


def open_audit_log(
    settings: ServerSettings,
    *,
    engine: Engine | None = None,
    checkpoint_every: int = 1024,
    checkpoint_interval: float = 30.0,
) -> AuditLog:
    """An ``AuditLog`` on the settings' database, signing with the data dir's key.

    Raises:
        ConfigError: no data directory, or the database cannot be opened.
        KeyMaterialError: the signing key is unsafe, unreadable or lost.
    """
    data_dir = settings.require_data_dir()
    engine = engine or open_database(settings.resolved_database_url())
    return AuditLog(
        engine=engine,
        signing_key=open_signing_key(data_dir, engine),
        checkpoint_every=checkpoint_every,
        checkpoint_interval=checkpoint_interval,
    )


@contextmanager
def audited_local_action(
    settings: ServerSettings,
    *,
    action: str,
    resource_type: str,
    resource_id: str,
    details: Mapping[str, Any] | None = None,
) -> Iterator[None]:
    """Record an action taken from a shell on the server machine, before it runs.

    Whoever can read the data directory may act, so the event is ``allowed`` and committed
    before the action starts (nothing happens unrecorded); if the action then raises a
    FedvaultError, a ``failed`` event with the reason follows.
    """
    recorded = dict(details or {})
    fields: EventFields = {
        "actor": local_actor(),
        "actor_type": LOCAL_USER,
        "action": action,
        "resource_type": resource_type,
        "resource_id": resource_id,
        "outcome": Outcome.ALLOWED,
        "source": "local",
        "details": recorded,
    }
    log = open_audit_log(settings)
    try:
        log.append(**fields)
        try:
            yield
        except FedvaultError as e:
            failed = {**recorded, "reason": str(e)[:500]}
            log.append(**(fields | {"outcome": Outcome.FAILED, "details": failed}))
            raise
    finally:
        log.close()
        log.engine.dispose()
