"""Envelope encryption: round trips, every tamper case, KEK rotation and storage rules."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import stat
from pathlib import Path

import pytest

from fedvault.common.crypto import (
    EnvKek,
    LocalKeyring,
    WrappedKey,
    ciphertext_size,
    decrypt_stream,
    encrypt_stream,
    open_object,
    rewrap,
    seal_object,
)
from fedvault.common.crypto.streaming import HEADER_SIZE, TAG_SIZE
from fedvault.common.errors import IntegrityError, KeyMaterialError

SEG = 4096
KEY = bytes(range(32))
AAD = b"model-a/1"


def _encrypt(data: bytes, *, key: bytes = KEY, aad: bytes = AAD, segment: int = SEG) -> bytes:
    out = io.BytesIO()
    encrypt_stream(
        io.BytesIO(data), out.write, data_key=key, associated_data=aad, segment_size=segment
    )
    return out.getvalue()


def _decrypt(blob: bytes, *, key: bytes = KEY, aad: bytes = AAD) -> bytes:
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(blob), out.write, data_key=key, associated_data=aad, name="obj")
    return out.getvalue()


def _segments(blob: bytes, segment: int = SEG) -> list[bytes]:
    body = blob[HEADER_SIZE:]
    step = segment + TAG_SIZE
    return [body[i : i + step] for i in range(0, len(body), step)]


@pytest.mark.parametrize(
    "size", [0, 1, SEG - 1, SEG, SEG + 1, 3 * SEG, 3 * SEG + 123], ids=lambda s: f"{s}B"
)
def test_round_trip_any_size(size: int) -> None:
    data = os.urandom(size)
    blob = _encrypt(data)
    assert len(blob) == ciphertext_size(size, SEG)
    assert _decrypt(blob) == data
    if size >= 16:
        assert data[:16] not in blob, "plaintext must not appear in the ciphertext"


def test_same_plaintext_encrypts_differently_each_time() -> None:
    data = b"weights" * 100
    assert _encrypt(data) != _encrypt(data)


@pytest.mark.parametrize(
    ("offset", "what"),
    [
        (0, "magic"),
        (4, "format version"),
        (6, "segment size"),
        (12, "salt"),
        (HEADER_SIZE - 1, "nonce prefix"),
    ],
)
def test_tampered_header_is_refused(offset: int, what: str) -> None:
    blob = bytearray(_encrypt(os.urandom(2 * SEG)))
    blob[offset] ^= 0x01
    with pytest.raises(IntegrityError, match="obj"):
        _decrypt(bytes(blob))


@pytest.mark.parametrize("segment_index", [0, 1, 2])
def test_tampered_segment_is_refused(segment_index: int) -> None:
    blob = bytearray(_encrypt(os.urandom(2 * SEG + 10)))
    blob[HEADER_SIZE + segment_index * (SEG + TAG_SIZE) + 5] ^= 0x80
    with pytest.raises(IntegrityError, match=f"segment {segment_index} failed"):
        _decrypt(bytes(blob))


@pytest.mark.parametrize(
    "cut",
    [HEADER_SIZE - 1, HEADER_SIZE + 3, HEADER_SIZE + SEG + TAG_SIZE, HEADER_SIZE + SEG + 40],
    ids=["in-header", "in-first-segment", "at-segment-boundary", "in-second-segment"],
)
def test_truncated_stream_is_refused(cut: int) -> None:
    blob = _encrypt(os.urandom(3 * SEG))
    with pytest.raises(IntegrityError, match=r"truncated|failed authentication"):
        _decrypt(blob[:cut])


def test_reordered_segments_are_refused() -> None:
    blob = _encrypt(os.urandom(3 * SEG))
    s = _segments(blob)
    with pytest.raises(IntegrityError):
        _decrypt(blob[:HEADER_SIZE] + s[1] + s[0] + s[2])


def test_appended_segment_is_refused() -> None:
    blob = _encrypt(os.urandom(2 * SEG + 7))
    with pytest.raises(IntegrityError):
        _decrypt(blob + _segments(blob)[0])


def test_wrong_key_or_other_object_is_refused() -> None:
    blob = _encrypt(b"x" * 100)
    with pytest.raises(IntegrityError):
        _decrypt(blob, key=bytes(32))
    with pytest.raises(IntegrityError):
        _decrypt(blob, aad=b"model-a/2")


def test_objects_larger_than_2gib_stream_in_constant_memory(tmp_path: Path) -> None:
    """AES-GCM refuses > 2^31-1 bytes per call; the segmented format does not care."""
    size = 2**31 + 3 * 2**20 + 5

    class Zeros(io.RawIOBase):
        left = size

        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
            n = min(len(b), self.left)
            b[:n] = bytes(n)
            self.left -= n
            return n

    path = tmp_path / "big.bin"
    with path.open("wb") as fh:
        written = encrypt_stream(
            io.BufferedReader(Zeros(), 1 << 22),
            fh.write,
            data_key=KEY,
            associated_data=AAD,
            segment_size=1 << 24,
        )
    assert written == size
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        assert (
            decrypt_stream(fh, digest.update, data_key=KEY, associated_data=AAD, name="big") == size
        )
    expected = hashlib.sha256()
    chunk = bytes(1 << 24)
    for _ in range(size // len(chunk)):
        expected.update(chunk)
    expected.update(bytes(size % len(chunk)))
    assert digest.digest() == expected.digest()


# --- KEKs --------------------------------------------------------------------------------


@pytest.fixture
def keyring(tmp_path: Path) -> LocalKeyring:
    return LocalKeyring.create(tmp_path / "keyring.json")


def _seal(kek, data: bytes, object_id: str = "model-a", version: int = 1):  # type: ignore[no-untyped-def]
    out = io.BytesIO()
    wrapped, _ = seal_object(
        io.BytesIO(data), out.write, kek=kek, object_id=object_id, version=version, segment_size=SEG
    )
    return wrapped, out.getvalue()


def _open(kek, wrapped, blob: bytes, object_id: str = "model-a", version: int = 1) -> bytes:  # type: ignore[no-untyped-def]
    return b"".join(
        open_object(
            io.BytesIO(blob), kek=kek, wrapped=wrapped, object_id=object_id, version=version
        )
    )


def test_keyring_is_created_owner_only_and_never_overwritten(tmp_path: Path) -> None:
    ring = LocalKeyring.create(tmp_path / "k.json")
    assert stat.S_IMODE(ring.path.stat().st_mode) == 0o600
    with pytest.raises(KeyMaterialError, match="already exists"):
        LocalKeyring.create(tmp_path / "k.json")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_keyring_readable_by_others_is_refused(keyring: LocalKeyring, mode: int) -> None:
    keyring.path.chmod(mode)
    with pytest.raises(KeyMaterialError, match="chmod 600"):
        LocalKeyring.load(keyring.path)


def test_missing_or_garbled_keyring_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeyMaterialError, match="No keyring"):
        LocalKeyring.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    bad.chmod(0o600)
    with pytest.raises(KeyMaterialError, match="not readable"):
        LocalKeyring.load(bad)


def test_envelope_round_trip_and_binding(keyring: LocalKeyring) -> None:
    data = os.urandom(3 * SEG)
    wrapped, blob = _seal(keyring, data)
    assert _open(keyring, wrapped, blob) == data
    # The same blob and key record under another id or version does not open.
    with pytest.raises(IntegrityError):
        _open(keyring, wrapped, blob, object_id="model-b")
    with pytest.raises(IntegrityError):
        _open(keyring, wrapped, blob, version=2)
    # A key record relabelled with another KEK version does not open either.
    keyring.rotate()
    with pytest.raises(IntegrityError):
        _open(keyring, WrappedKey(2, wrapped.sealed), blob)


def test_wrong_kek_is_refused(tmp_path: Path, keyring: LocalKeyring) -> None:
    other = LocalKeyring.create(tmp_path / "other.json")
    wrapped, blob = _seal(keyring, b"secret weights")
    with pytest.raises(IntegrityError, match="wrong key-encryption key"):
        _open(other, wrapped, blob)


def test_rotation_keeps_old_versions_readable_and_rewraps_without_reencrypting(
    keyring: LocalKeyring,
) -> None:
    data = os.urandom(SEG + 1)
    wrapped, blob = _seal(keyring, data)
    assert keyring.rotate() == 2
    reloaded = LocalKeyring.load(keyring.path)
    assert reloaded.current_version() == 2
    assert _open(reloaded, wrapped, blob) == data  # version 1 still readable
    fresh = rewrap(wrapped, kek=reloaded, object_id="model-a", version=1)
    assert fresh.kek_version == 2
    assert _open(reloaded, fresh, blob) == data  # same ciphertext, new key record
    reloaded.retire(1)
    again = LocalKeyring.load(keyring.path)
    assert [(v.version, v.retired) for v in again.versions()] == [(1, True), (2, False)]
    assert '"key": ""' in keyring.path.read_text(), "a retired key's bytes are erased"
    with pytest.raises(KeyMaterialError, match="retired"):
        _open(again, wrapped, blob)
    assert _open(again, fresh, blob) == data
    with pytest.raises(KeyMaterialError, match="current"):
        again.retire(2)


def test_env_kek(keyring: LocalKeyring) -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    env = {"FEDVAULT_KEK": f"1:{base64.b64encode(k1).decode()}"}
    kek = EnvKek(environ=env)
    wrapped, blob = _seal(kek, b"abc")
    env["FEDVAULT_KEK"] = f"2:{base64.b64encode(k2).decode()},1:{base64.b64encode(k1).decode()}"
    rotated = EnvKek(environ=env)
    assert rotated.current_version() == 2
    assert (
        _open(rotated, rewrap(wrapped, kek=rotated, object_id="model-a", version=1), blob) == b"abc"
    )
    with pytest.raises(KeyMaterialError, match="outside fedvault"):
        rotated.rotate()


@pytest.mark.parametrize(
    "value",
    [
        "",
        "abc",
        "1:notbase64!",
        f"0:{base64.b64encode(bytes(32)).decode()}",
        f"1:{base64.b64encode(bytes(16)).decode()}",
        f"1:{base64.b64encode(bytes(32)).decode()},1:{base64.b64encode(bytes(32)).decode()}",
    ],
    ids=["empty", "no-version", "bad-base64", "version-0", "short-key", "duplicate"],
)
def test_env_kek_refuses_malformed_values(value: str) -> None:
    with pytest.raises(KeyMaterialError, match="FEDVAULT_KEK"):
        EnvKek(environ={"FEDVAULT_KEK": value})
