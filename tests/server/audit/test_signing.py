"""The signing key lives in an owner-only file; checkpoints are C2SP signed notes."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedvault.common.errors import ConfigError, KeyMaterialError
from fedvault.server.audit.signing import KEY_NAME, Checkpoint, PublicKey, SigningKey


def test_key_file_is_owner_only_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "audit-signing.key"
    key = SigningKey.create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SigningKey.load(path).public.raw == key.public.raw
    with pytest.raises(KeyMaterialError, match="already exists"):
        SigningKey.create(path)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_a_key_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "k"
    SigningKey.create(path)
    os.chmod(path, mode)
    with pytest.raises(KeyMaterialError, match="readable or writable by others"):
        SigningKey.load(path)


def test_missing_or_garbled_keys_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(KeyMaterialError, match="No audit signing key"):
        SigningKey.load(tmp_path / "none")
    garbled = tmp_path / "garbled"
    garbled.write_text("not a key")
    garbled.chmod(0o600)
    with pytest.raises(KeyMaterialError, match="not readable"):
        SigningKey.load(garbled)


def test_checkpoint_is_a_c2sp_signed_note_that_round_trips() -> None:
    key = SigningKey.generate()
    root = hashlib.sha256(b"root").digest()
    checkpoint = key.sign(1234, root)
    note = checkpoint.to_note()
    body, signature_line = note.split("\n\n")
    assert body == f"{key.public.origin}\n1234\n{base64.b64encode(root).decode()}"
    # C2SP: key ID = SHA-256(name || "\n" || 0x01 || public key)[:4], before the signature.
    key_id = hashlib.sha256(KEY_NAME.encode() + b"\n\x01" + key.public.raw).digest()[:4]
    raw = base64.b64decode(signature_line.split(" ")[-1])
    assert raw[:4] == key_id
    Ed25519PublicKey.from_public_bytes(key.public.raw).verify(raw[4:], (body + "\n").encode())
    parsed = Checkpoint.from_note(note)
    assert parsed == checkpoint and key.public.verify(parsed)


def test_public_key_exports_parse_back_and_check_signatures() -> None:
    for _ in range(20):  # some keys' base64 holds "+", the verifier key's separator
        key = SigningKey.generate()
        checkpoint = key.sign(3, hashlib.sha256(b"r").digest())
        for text in (key.public.to_pem(), key.public.to_vkey()):
            assert PublicKey.parse(text).verify(checkpoint)
    other = SigningKey.generate().public
    assert not other.verify(checkpoint)


def test_altered_checkpoints_fail() -> None:
    key = SigningKey.generate()
    good = key.sign(10, hashlib.sha256(b"r").digest())
    for bad in (
        Checkpoint(good.origin, 11, good.root, good.key_id, good.signature),
        Checkpoint(good.origin, 10, bytes(32), good.key_id, good.signature),
        Checkpoint("another-log", 10, good.root, good.key_id, good.signature),
        Checkpoint(good.origin, 10, good.root, good.key_id, bytes(64)),
    ):
        assert not key.public.verify(bad)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
        "fedvault-audit+00000000+AQ==",
    ],
)
def test_bad_public_keys_are_clear_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="audit public key"):
        PublicKey.parse(text)


@pytest.mark.parametrize("text", ["", "origin\n1\n", "a\nb\nc\n\n— fedvault-audit AAAA\n"])
def test_bad_checkpoint_notes_are_clear_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="Not a fedvault audit checkpoint"):
        Checkpoint.from_note(text)
