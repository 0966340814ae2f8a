"""The model store a server's settings describe: its KEK provider, database and blob directory."""

from __future__ import annotations

from fedvault.common.crypto import EnvKek, KekProvider, LocalKeyring
from fedvault.common.errors import ConfigError
from fedvault.server.core.db import open_database
from fedvault.server.core.settings import ServerSettings
from fedvault.server.store.service import ModelStore

__all__ = ["BLOBS", "KEYRING", "open_kek", "open_store"]

KEYRING = "keyring.json"
BLOBS = "blobs"


def open_kek(settings: ServerSettings) -> KekProvider:
    """The key-encryption keys: ``FEDVAULT_KEK`` or the data directory's keyring."""
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
