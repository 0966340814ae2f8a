"""The server's settings: where its data lives and which database and keys it uses."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from fedvault.common.errors import ConfigError

__all__ = ["DATA_DIR_ENV", "DEFAULT_DATA_DIR", "ServerSettings", "get_settings"]

DATA_DIR_ENV = "FEDVAULT_DATA_DIR"
# What the CLI uses when neither --data-dir nor FEDVAULT_DATA_DIR says otherwise.
DEFAULT_DATA_DIR = Path("fedvault-data")


class ServerSettings(BaseSettings):
    """Read from ``FEDVAULT_*`` environment variables.

    The supervisor (``fedvault demo`` today, ``fedvault server start`` later) sets them for
    the SuperLink, whose ServerApp processes inherit them.
    """

    model_config = SettingsConfigDict(env_prefix="FEDVAULT_", extra="ignore")

    data_dir: Path | None = Field(
        default=None, description="Server data directory: database, keyring, encrypted blobs."
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; defaults to the SQLite file fedvault.db in the data dir.",
    )
    kek_provider: Literal["keyring", "env"] = Field(
        default="keyring",
        description="Where key-encryption keys live: the data dir's keyring file, or FEDVAULT_KEK.",
    )

    def require_data_dir(self) -> Path:
        if self.data_dir is None:
            raise ConfigError(
                f"{DATA_DIR_ENV} is not set. The server keeps its database, keys and encrypted "
                "models there; point it at a directory made by `fedvault keys init` "
                "(`fedvault demo` sets it for you)."
            )
        return self.data_dir

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.require_data_dir() / 'fedvault.db'}"


@lru_cache
def get_settings() -> ServerSettings:
    """The process's settings, read once (tests clear the cache to override)."""
    return ServerSettings()
