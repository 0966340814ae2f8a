"""Key-encryption keys (KEKs): versioned keys that wrap each object's data key.

Providers share one small interface, ``KekProvider``: wrap a data key under the current
version, unwrap under the version it names, rotate, retire. Two ship here: a local keyring
file (the default; 0600, refused if group or world can read it) and a key given in an
environment variable. An external KMS (e.g. Vault's transit engine) fits the same interface:
its ``wrap``/``unwrap`` become calls to the KMS and no key bytes live in this process.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fedvault.common.errors import IntegrityError, KeyMaterialError
from fedvault.common.files import atomic_writer, create_private, read_private

__all__ = [
    "ENV_KEK",
    "EnvKek",
    "KekInfo",
    "KekProvider",
    "LocalKeyring",
    "WrappedKey",
]

ENV_KEK = "FEDVAULT_KEK"
_KEYRING_FORMAT = "fedvault-keyring-v1"
_NONCE_SIZE = 12


@dataclass(frozen=True)
class WrappedKey:
    """A data key sealed under one KEK version: ``nonce(12) | ciphertext | tag``."""

    kek_version: int
    sealed: bytes


@dataclass(frozen=True)
class KekInfo:
    """Public facts about one KEK version (never the key itself)."""

    version: int
    created: str
    retired: bool


class KekProvider(Protocol):
    """Where key-encryption keys live. ``context`` names the object a data key belongs to."""

    @property
    def description(self) -> str: ...

    @property
    def creates_keys(self) -> bool:
        """Whether ``rotate`` can make a new version here (else new keys come from outside)."""
        ...

    def current_version(self) -> int: ...

    def versions(self) -> list[KekInfo]: ...

    def wrap(self, data_key: bytes, *, context: bytes) -> WrappedKey: ...

    def unwrap(self, wrapped: WrappedKey, *, context: bytes) -> bytes: ...

    def rotate(self) -> int: ...

    def retire(self, version: int) -> None: ...


def _wrap_aad(context: bytes, version: int) -> bytes:
    # The KEK version is bound too: a wrapped key relabelled with another version fails.
    return b"fedvault-dek-v1\x00" + struct.pack(">I", version) + context


def _seal(kek: bytes, version: int, data_key: bytes, context: bytes) -> WrappedKey:
    nonce = os.urandom(_NONCE_SIZE)
    sealed = AESGCM(kek).encrypt(nonce, data_key, _wrap_aad(context, version))
    return WrappedKey(kek_version=version, sealed=nonce + sealed)


def _open(kek: bytes, wrapped: WrappedKey, context: bytes) -> bytes:
    nonce, sealed = wrapped.sealed[:_NONCE_SIZE], wrapped.sealed[_NONCE_SIZE:]
    try:
        return AESGCM(kek).decrypt(nonce, sealed, _wrap_aad(context, wrapped.kek_version))
    except InvalidTag:
        raise IntegrityError(
            f"The data key wrapped under KEK version {wrapped.kek_version} does not open: "
            "the wrong key-encryption key, or the key record was altered or moved."
        ) from None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class _VersionedKeys:
    """Wrap/unwrap over an in-memory map of version -> key bytes."""

    def __init__(self, keys: dict[int, bytes], current: int, retired: set[int]):
        self._keys = keys
        self._current = current
        self._retired = retired

    def current_version(self) -> int:
        return self._current

    def _key(self, version: int) -> bytes:
        if version in self._retired:
            raise KeyMaterialError(
                f"KEK version {version} is retired; objects wrapped under it can no longer "
                "be opened. Rotate before retiring a version that is still in use."
            )
        key = self._keys.get(version)
        if key is None:
            raise KeyMaterialError(
                f"KEK version {version} is not in {self.description}; "
                f"it has versions {sorted(self._keys)}."
            )
        return key

    @property
    def description(self) -> str:  # overridden
        return "this key provider"

    def wrap(self, data_key: bytes, *, context: bytes) -> WrappedKey:
        return _seal(self._key(self._current), self._current, data_key, context)

    def unwrap(self, wrapped: WrappedKey, *, context: bytes) -> bytes:
        return _open(self._key(wrapped.kek_version), wrapped, context)


class LocalKeyring(_VersionedKeys):
    """KEKs in a local JSON file readable only by its owner (mode 0600)."""

    def __init__(self, path: Path, document: dict[str, Any]):
        self.path = path
        self._adopt(document)

    def _adopt(self, document: dict[str, Any]) -> None:
        keys, retired = {}, set()
        for entry in document["keys"]:
            version = int(entry["version"])
            if entry.get("retired"):
                retired.add(version)
                continue
            key = base64.b64decode(entry["key"], validate=True)
            if len(key) != 32:
                raise ValueError(f"KEK version {version} is not a 256-bit key")
            keys[version] = key
        current = int(document["current"])
        if current not in keys:
            raise ValueError(f"current KEK version {current} has no usable key")
        self._doc = document
        self._seen = self.path.stat().st_mtime_ns if self.path.exists() else 0
        super().__init__(keys, current, retired)

    def _refresh(self) -> None:
        """Pick up a rotation or retirement another process saved since this one loaded."""
        if self.path.stat().st_mtime_ns != self._seen:
            self._adopt(LocalKeyring.load(self.path)._doc)

    def current_version(self) -> int:
        self._refresh()
        return super().current_version()

    def wrap(self, data_key: bytes, *, context: bytes) -> WrappedKey:
        self._refresh()
        return super().wrap(data_key, context=context)

    def unwrap(self, wrapped: WrappedKey, *, context: bytes) -> bytes:
        self._refresh()
        return super().unwrap(wrapped, context=context)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialize changes across processes, working on the file's newest contents."""
        with open(self.path.with_name(f".{self.path.name}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._adopt(LocalKeyring.load(self.path)._doc)
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    creates_keys = True

    @property
    def description(self) -> str:
        return f"the keyring {self.path}"

    @classmethod
    def create(cls, path: Path) -> LocalKeyring:
        """Create a keyring holding one fresh KEK (version 1); refuses to overwrite."""
        doc = {
            "format": _KEYRING_FORMAT,
            "current": 1,
            "keys": [{"version": 1, "key": _new_key_b64(), "created": _now(), "retired": False}],
        }
        create_private(path, json.dumps(doc, indent=2).encode(), what="A keyring")
        return cls(path, doc)

    @classmethod
    def load(cls, path: Path) -> LocalKeyring:
        """Load a keyring, refusing one that anyone but its owner can read or write."""
        raw = read_private(
            path, what="keyring", create_hint="Create one with `fedvault keys init`."
        )
        try:
            doc = json.loads(raw)
            if doc.get("format") != _KEYRING_FORMAT:
                raise ValueError(f"format is {doc.get('format')!r}")
            return cls(path, doc)
        except (ValueError, KeyError, TypeError, binascii.Error) as e:
            raise KeyMaterialError(f"The keyring {path} is not readable: {e}.") from e

    def versions(self) -> list[KekInfo]:
        return [
            KekInfo(int(e["version"]), str(e["created"]), bool(e.get("retired")))
            for e in self._doc["keys"]
        ]

    def rotate(self) -> int:
        """Add a new KEK version and make it current; earlier versions stay readable."""
        with self._locked():
            version = max(int(e["version"]) for e in self._doc["keys"]) + 1
            self._doc["keys"].append(
                {"version": version, "key": _new_key_b64(), "created": _now(), "retired": False}
            )
            self._doc["current"] = version
            self._save()
        return version

    def retire(self, version: int) -> None:
        """Mark a non-current version retired (its key bytes are erased from the file)."""
        with self._locked():
            if version == self._current:
                raise KeyMaterialError(f"KEK version {version} is current; rotate first.")
            for entry in self._doc["keys"]:
                if int(entry["version"]) == version:
                    entry["retired"] = True
                    entry["key"] = ""
                    break
            else:
                raise KeyMaterialError(f"{self.description} has no KEK version {version}.")
            self._save()

    def _save(self) -> None:
        with atomic_writer(self.path, mode=0o600) as fh:
            fh.write(json.dumps(self._doc, indent=2).encode())
        self._adopt(self._doc)


class EnvKek(_VersionedKeys):
    """KEKs from an environment variable: ``VERSION:BASE64KEY[,VERSION:BASE64KEY...]``.

    The first entry is current. Rotation happens outside: put the new key first and keep the
    old ones after it until `fedvault keys rotate` has re-wrapped every object.
    """

    def __init__(self, variable: str = ENV_KEK, environ: dict[str, str] | None = None):
        self.variable = variable
        raw = (os.environ if environ is None else environ).get(variable, "").strip()
        if not raw:
            raise KeyMaterialError(f"The environment variable {variable} is not set.")
        keys: dict[int, bytes] = {}
        order: list[int] = []
        for item in raw.split(","):
            version_text, sep, key_text = item.strip().partition(":")
            try:
                version = int(version_text)
                key = base64.b64decode(key_text, validate=True)
            except (ValueError, binascii.Error):
                version, key = 0, b""
            if not sep or version < 1 or len(key) != 32 or version in keys:
                raise KeyMaterialError(
                    f"{variable} must be VERSION:BASE64 entries of 32-byte keys, comma "
                    "separated, current first, versions distinct and >= 1 "
                    f"(entry {len(order) + 1} is not)."
                )
            keys[version] = key
            order.append(version)
        super().__init__(keys, order[0], set())

    creates_keys = False

    @property
    def description(self) -> str:
        return f"the environment variable {self.variable}"

    def versions(self) -> list[KekInfo]:
        return [KekInfo(v, "", False) for v in sorted(self._keys)]

    def rotate(self) -> int:
        raise KeyMaterialError(
            f"Keys from {self.variable} are rotated outside fedvault: generate a key, put "
            f"'N:BASE64' first in {self.variable}, restart, then run `fedvault keys rotate`."
        )

    def retire(self, version: int) -> None:
        raise KeyMaterialError(
            f"Keys from {self.variable} are retired by removing them from the variable."
        )


def _new_key_b64() -> str:
    return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()
