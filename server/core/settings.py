"""The server's settings: where its data lives and which database and keys it uses."""

from __future__ import annotations

import json
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from fedvault.common.errors import ConfigError
from fedvault.common.files import atomic_writer

__all__ = [
    "DATA_DIR_ENV",
    "DEFAULT_DATA_DIR",
    "SETTINGS_FILE",
    "ServerSettings",
    "get_settings",
    "read_settings_file",
    "write_settings_file",
]

DATA_DIR_ENV = "FEDVAULT_DATA_DIR"
# What the CLI uses when neither --data-dir nor FEDVAULT_DATA_DIR says otherwise.
DEFAULT_DATA_DIR = Path("fedvault-data")
# Settings `fedvault server init` was given, kept in the data directory (0600: a database
# URL may hold a password) so that later commands need not repeat them.
SETTINGS_FILE = "settings.toml"
_FILE_KEYS = {"database-url": "database_url"}


def read_settings_file(data_dir: Path) -> dict[str, str]:
    """The settings stored in ``data_dir`` (field name -> value); empty if there is no file.

    Raises:
        ConfigError: the file is not TOML, or holds a key fedvault does not know.
    """
    path = data_dir / SETTINGS_FILE
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}. Fix or remove it.") from None
    unknown = sorted(set(raw) - set(_FILE_KEYS))
    if unknown or not all(isinstance(v, str) for v in raw.values()):
        raise ConfigError(
            f"{path} may hold only text values for {', '.join(_FILE_KEYS)}; "
            f"found {', '.join(unknown) or 'a value that is not text'}."
        )
    return {_FILE_KEYS[k]: v for k, v in raw.items()}


def write_settings_file(data_dir: Path, *, database_url: str) -> None:
    """Record the database URL ``server init`` was given (owner-only file)."""
    text = (
        "# Written by `fedvault server init`; later commands read it. Owner-only: the URL\n"
        "# may hold a password. FEDVAULT_DATABASE_URL or --database-url override it.\n"
        f"database-url = {json.dumps(database_url)}\n"
    )
    with atomic_writer(data_dir / SETTINGS_FILE) as fh:
        fh.write(text.encode("utf-8"))


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

    # -- the admin plane (fedvault server start) ----------------------------------------
    mode: Literal["production", "test"] = Field(
        default="production",
        description="'test' allows plain HTTP and other unsafe shortcuts, and says so loudly.",
    )
    api_host: str = Field(default="127.0.0.1", description="Where the admin API listens.")
    api_port: int = Field(default=8443, ge=1, le=65535)
    fleet_host: str = Field(
        default="0.0.0.0",  # noqa: S104 -- sites connect from other machines; TLS + node auth
        description="Where sites connect: the fleet gateway passes only /v1/fleet/* on.",
    )
    fleet_port: int = Field(default=9092, ge=1, le=65535)
    superlink_port: int = Field(
        default=9093, ge=1, le=65535, description="The SuperLink's own port, on loopback only."
    )
    federation_address: str | None = Field(
        default=None,
        description="host:port of the SuperLink's Control API (loopback); set by the supervisor.",
    )
    token_pepper: SecretStr | None = Field(
        default=None,
        description="Base64 key for API token digests; defaults to the data dir's pepper file.",
    )
    max_body_bytes: int = Field(default=1 << 20, ge=1024, description="Largest request body.")
    auth_cache_seconds: float = Field(
        default=2.0,
        ge=0,
        description="How long the API may reuse a token's principal before looking it up "
        "again (0: every request); changes made through the API apply at once.",
    )
    auth_failures_per_minute: int = Field(
        default=10, ge=1, description="Failed logins per source address before answering 429."
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
        """The database: the setting, else the one ``server init`` recorded, else SQLite."""
        if self.database_url:
            return self.database_url
        data_dir = self.require_data_dir()
        stored = read_settings_file(data_dir).get("database_url")
        return stored or f"sqlite:///{data_dir / 'fedvault.db'}"


@lru_cache
def get_settings() -> ServerSettings:
    """The process's settings, read once (tests clear the cache to override)."""
    return ServerSettings()
