"""The server's data directory: database, keyring and encrypted blobs, opened as one store."""

from __future__ import annotations

import os
from pathlib import Path

from fedvault.common.crypto import EnvKek, KekProvider, LocalKeyring
from fedvault.common.errors import ConfigError
from fedvault.server.audit.service import ensure_signing_key
from fedvault.server.db import open_database
from fedvault.server.settings import ServerSettings
from fedvault.server.store.service import ModelStore

__all__ = ["KEYRING", "init_data_dir", "open_kek", "open_store"]

KEYRING = "keyring.json"
BLOBS = "blobs"


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


def open_kek(settings: ServerSettings) -> KekProvider:
    if settings.kek_provider == "env":
        return EnvKek()
    return LocalKeyring.load(settings.require_data_dir() / KEYRING)


def open_store(settings: ServerSettings) -> ModelStore:
    """Open the model store the settings describe (migrating the database if needed)."""
    data_dir = settings.require_data_dir()
    if not data_dir.is_dir():
        raise ConfigError(
            f"The data directory {data_dir} does not exist; create it with `fedvault keys init`."
        )
    kek = open_kek(settings)
    engine = open_database(settings.resolved_database_url())
    return ModelStore(engine=engine, blob_dir=data_dir / BLOBS, kek=kek)
