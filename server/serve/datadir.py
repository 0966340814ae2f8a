"""Bootstrap of a server's data directory: database schema, keyring, audit signing key, blobs."""

from __future__ import annotations

import os
from pathlib import Path

from fedvault.common.crypto import LocalKeyring
from fedvault.server.audit.service import ensure_signing_key
from fedvault.server.core.db import open_database
from fedvault.server.core.settings import ServerSettings
from fedvault.server.store.from_settings import BLOBS, KEYRING

__all__ = ["init_data_dir"]


def init_data_dir(settings: ServerSettings) -> Path:
    """Create the data directory (0700), its keyring, audit signing key and database schema.

    Idempotent: what exists is left as it is.
    """
    data_dir = settings.require_data_dir()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    (data_dir / BLOBS).mkdir(mode=0o700, exist_ok=True)
    if settings.kek_provider == "keyring" and not (data_dir / KEYRING).exists():
        LocalKeyring.create(data_dir / KEYRING)
    ensure_signing_key(data_dir)
    open_database(settings.resolved_database_url()).dispose()
    return data_dir
