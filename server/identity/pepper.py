"""The server's token pepper: the secret key of the API token digests."""

from __future__ import annotations

import base64
import binascii
import secrets
from pathlib import Path

from fedvault.common.errors import ConfigError, KeyMaterialError
from fedvault.common.files import create_private, read_private
from fedvault.server.core.settings import ServerSettings

__all__ = ["MIN_PEPPER_BYTES", "PEPPER_FILE", "ensure_pepper", "load_pepper"]

PEPPER_FILE = "token-pepper.key"
MIN_PEPPER_BYTES = 32
_NEW_PEPPER_BYTES = 32


def _decode(text: str, *, where: str) -> bytes:
    try:
        pepper = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as e:
        raise ConfigError(
            f"The token pepper in {where} is not valid base64 ({e}). Generate one with "
            "`python -c 'import secrets,base64; print(base64.b64encode(secrets.token_bytes(32))"
            ".decode())'`."
        ) from e
    if len(pepper) < MIN_PEPPER_BYTES:
        raise ConfigError(
            f"The token pepper in {where} is {len(pepper)} bytes; it must be at least "
            f"{MIN_PEPPER_BYTES} random bytes (base64 encoded)."
        )
    return pepper


def ensure_pepper(data_dir: Path) -> bool:
    """Create the data dir's pepper file (0600) unless it exists; never overwrite it.

    Returns:
        True when a new pepper was written, False when one was there already.

    Raises:
        KeyMaterialError: the existing file is readable by others or is not a valid pepper.
    """
    path = data_dir / PEPPER_FILE
    if path.exists():
        _read_file(path)  # refuse a file with loose modes or bad content now, not at startup
        return False
    data = base64.b64encode(secrets.token_bytes(_NEW_PEPPER_BYTES)) + b"\n"
    create_private(path, data, what="token pepper")
    return True


def _read_file(path: Path) -> bytes:
    data = read_private(
        path, what="token pepper", create_hint="Create it with `fedvault server init`."
    )
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as e:
        raise KeyMaterialError(
            f"The token pepper {path} is not base64 text; restore it from a backup (API "
            "tokens issued with another pepper no longer work)."
        ) from e
    try:
        return _decode(text, where=str(path))
    except ConfigError as e:
        raise KeyMaterialError(str(e)) from e


def load_pepper(settings: ServerSettings) -> bytes:
    """The pepper from ``FEDVAULT_TOKEN_PEPPER``, else from the data dir's pepper file.

    Raises:
        ConfigError: the setting is not base64 of at least 32 bytes, or neither it nor a
            data dir is set.
        KeyMaterialError: the pepper file is missing, bad, or readable by others.
    """
    if settings.token_pepper is not None:
        return _decode(settings.token_pepper.get_secret_value(), where="FEDVAULT_TOKEN_PEPPER")
    return _read_file(settings.require_data_dir() / PEPPER_FILE)
