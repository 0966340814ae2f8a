"""Ed25519 checkpoint signing as C2SP signed notes, and the key file that holds the key."""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedvault.common.errors import ConfigError, KeyMaterialError
from fedvault.common.files import create_private, read_private

__all__ = ["KEY_FILE", "KEY_NAME", "Checkpoint", "PublicKey", "SigningKey"]

KEY_FILE = "audit-signing.key"
KEY_NAME = "fedvault-audit"
_ED25519 = b"\x01"  # C2SP signed-note signature type
_DASH = "\u2014 "


@dataclass(frozen=True)
class Checkpoint:
    """A signed tree head: ``tree_size`` events whose Merkle root is ``root``."""

    origin: str
    tree_size: int
    root: bytes
    key_id: bytes
    signature: bytes

    def body(self) -> str:
        return checkpoint_body(self.origin, self.tree_size, self.root)

    def to_note(self) -> str:
        """The C2SP checkpoint as a signed note, the form to keep outside the database."""
        sig = base64.b64encode(self.key_id + self.signature).decode()
        return f"{self.body()}\n{_DASH}{KEY_NAME} {sig}\n"

    @classmethod
    def from_note(cls, text: str) -> Checkpoint:
        """Parse a checkpoint note (as ``to_note`` writes it).

        Raises:
            ConfigError: ``text`` is not a fedvault audit checkpoint note.
        """
        body, sep, signatures = text.partition("\n\n")
        lines = body.split("\n")
        try:
            if not sep or len(lines) != 3:
                raise ValueError("expected origin, size and root, a blank line, a signature")
            origin, size, root_b64 = lines
            sig_line = next(s for s in signatures.split("\n") if s.startswith(_DASH + KEY_NAME))
            raw = base64.b64decode(sig_line.rsplit(" ", 1)[1], validate=True)
            root = base64.b64decode(root_b64, validate=True)
            if not size.isdigit() or len(root) != 32 or len(raw) != 68:
                raise ValueError("bad size, root or signature")
        except (ValueError, StopIteration, IndexError, binascii.Error) as e:
            raise ConfigError(f"Not a fedvault audit checkpoint: {e}.") from None
        return cls(origin, int(size), root, raw[:4], raw[4:])


def checkpoint_body(origin: str, tree_size: int, root: bytes) -> str:
    """The signed text of a C2SP checkpoint: origin, size, base64 root, one per line."""
    return f"{origin}\n{tree_size}\n{base64.b64encode(root).decode()}\n"


class PublicKey:
    """The key that checks checkpoint signatures; all an offline verifier needs."""

    def __init__(self, key: Ed25519PublicKey):
        self._key = key
        self.raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.key_id = hashlib.sha256(KEY_NAME.encode() + b"\n" + _ED25519 + self.raw).digest()[:4]

    @property
    def origin(self) -> str:
        """The log's name in its checkpoints, unique to this key."""
        return f"fedvault-audit/{self.key_id.hex()}"

    def to_pem(self) -> str:
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def to_vkey(self) -> str:
        """The C2SP verifier key: ``name+keyid+base64(type || key)``."""
        return f"{KEY_NAME}+{self.key_id.hex()}+{base64.b64encode(_ED25519 + self.raw).decode()}"

    @classmethod
    def parse(cls, text: str) -> PublicKey:
        """A public key from PEM or from a C2SP verifier key.

        Raises:
            ConfigError: the text is neither, or not an Ed25519 key.
        """
        text = text.strip()
        try:
            if text.startswith("-----BEGIN"):
                key = serialization.load_pem_public_key(text.encode())
            else:
                name, key_id, encoded = text.split("+", 2)  # base64 may hold "+" too
                raw = base64.b64decode(encoded, validate=True)
                if name != KEY_NAME or raw[:1] != _ED25519:
                    raise ValueError("not a fedvault audit Ed25519 verifier key")
                key = Ed25519PublicKey.from_public_bytes(raw[1:])
                if cls(key).key_id.hex() != key_id:
                    raise ValueError("its key id does not match the key")
        except (ValueError, TypeError, binascii.Error, UnsupportedAlgorithm) as e:
            raise ConfigError(f"Not an audit public key (PEM or verifier key): {e}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError("The audit public key must be an Ed25519 key.")
        return cls(key)

    @classmethod
    def load(cls, path: Path) -> PublicKey:
        try:
            return cls.parse(path.read_text())
        except OSError as e:
            raise ConfigError(f"Cannot read the public key {path}: {e.strerror or e}.") from e

    def verify(self, checkpoint: Checkpoint) -> bool:
        """Whether this key signed ``checkpoint`` for this log."""
        if checkpoint.key_id != self.key_id or checkpoint.origin != self.origin:
            return False
        try:
            self._key.verify(checkpoint.signature, checkpoint.body().encode())
        except InvalidSignature:
            return False
        return True


class SigningKey:
    """The Ed25519 key that signs checkpoints, kept in a file only its owner can read."""

    def __init__(self, key: Ed25519PrivateKey, path: Path | None = None):
        self._key = key
        self.path = path
        self.public = PublicKey(key.public_key())

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh key held only in memory (tests and throwaway logs)."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def create(cls, path: Path) -> SigningKey:
        """Write a new key to ``path`` (0600); refuses to overwrite one."""
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        create_private(path, pem, what="An audit signing key")
        return cls(key, path)

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        """Load the key, refusing a file that anyone but its owner can read or write."""
        raw = read_private(
            path, what="audit signing key", create_hint="`fedvault keys init` creates one."
        )
        try:
            key = serialization.load_pem_private_key(raw, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as e:
            raise KeyMaterialError(f"The audit signing key {path} is not readable: {e}") from e
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyMaterialError(f"The audit signing key {path} is not an Ed25519 key.")
        return cls(key, path)

    def sign(self, tree_size: int, root: bytes) -> Checkpoint:
        """Sign the checkpoint of a tree of ``tree_size`` leaves with head ``root``."""
        origin = self.public.origin
        signature = self._key.sign(checkpoint_body(origin, tree_size, root).encode())
        return Checkpoint(origin, tree_size, root, self.public.key_id, signature)
