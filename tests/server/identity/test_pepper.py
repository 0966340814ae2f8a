"""The token pepper: from the environment or an owner-only file in the data dir."""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

import pytest
from pydantic import SecretStr

from fedvault.common.errors import ConfigError, KeyMaterialError
from fedvault.server.core.settings import ServerSettings
from fedvault.server.identity.pepper import PEPPER_FILE, ensure_pepper, load_pepper


def _settings(data_dir: Path | None = None, pepper: str | None = None) -> ServerSettings:
    return ServerSettings(
        data_dir=data_dir, token_pepper=SecretStr(pepper) if pepper is not None else None
    )


def test_ensure_pepper_creates_an_owner_only_file_once(tmp_path: Path) -> None:
    assert ensure_pepper(tmp_path) is True
    path = tmp_path / PEPPER_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    first = load_pepper(_settings(tmp_path))
    assert len(first) >= 32
    assert ensure_pepper(tmp_path) is False
    assert load_pepper(_settings(tmp_path)) == first


def test_environment_pepper_wins_over_the_file(tmp_path: Path) -> None:
    ensure_pepper(tmp_path)
    raw = secrets.token_bytes(48)
    assert load_pepper(_settings(tmp_path, base64.b64encode(raw).decode())) == raw


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("not base64 !!", "not valid base64"),
        (base64.b64encode(b"short").decode(), "at least 32"),
        ("", "at least 32"),
    ],
)
def test_bad_environment_pepper_is_refused(value: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        load_pepper(_settings(pepper=value))


def test_group_readable_pepper_file_is_refused(tmp_path: Path) -> None:
    ensure_pepper(tmp_path)
    os.chmod(tmp_path / PEPPER_FILE, 0o640)
    with pytest.raises(KeyMaterialError, match="chmod 600"):
        load_pepper(_settings(tmp_path))
    with pytest.raises(KeyMaterialError):
        ensure_pepper(tmp_path)


def test_missing_pepper_file_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(KeyMaterialError, match="fedvault server init"):
        load_pepper(_settings(tmp_path))


def test_no_pepper_and_no_data_dir_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="FEDVAULT_DATA_DIR"):
        load_pepper(_settings())


def test_corrupt_pepper_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / PEPPER_FILE
    path.write_bytes(base64.b64encode(b"too short") + b"\n")
    path.chmod(0o600)
    with pytest.raises(KeyMaterialError, match="at least 32"):
        load_pepper(_settings(tmp_path))
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(KeyMaterialError, match="not base64"):
        load_pepper(_settings(tmp_path))
