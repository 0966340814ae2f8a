"""Segmented streaming AES-256-GCM: constant memory, any size, truncation and reordering caught.

The layout follows Tink's AES-GCM-HKDF streaming AEAD: a header carrying a random salt and
nonce prefix, then fixed-size segments, each sealed on its own. A per-object segment key is
derived with HKDF-SHA256 from the object's data key, the salt and the associated data (which
names the object), so a blob copied under another object id or version cannot be opened.
Each segment's nonce is ``prefix(7) || counter(4, big-endian) || last(1)``: a reordered,
dropped or appended segment and a stream cut at a segment boundary all fail to authenticate.
Every segment also authenticates the whole header, so no header byte can change unnoticed.

    header  = b"FVSA" | format (1) | segment size (4, big-endian) | salt (32) | prefix (7)
    segment = AES-256-GCM(segment key, nonce, plaintext, aad=header) -> ciphertext | tag (16)
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedvault.common.errors import ConfigError, IntegrityError

__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "HEADER_SIZE",
    "TAG_SIZE",
    "Sink",
    "StreamHeader",
    "ciphertext_size",
    "decrypt_segments",
    "decrypt_stream",
    "encrypt_stream",
    "new_data_key",
]

MAGIC = b"FVSA"
FORMAT_VERSION = 1
DEFAULT_SEGMENT_SIZE = 1 << 20
MIN_SEGMENT_SIZE = 1 << 12
MAX_SEGMENT_SIZE = 1 << 26
TAG_SIZE = 16
KEY_SIZE = 32
_SALT_SIZE = 32
_PREFIX_SIZE = 7
_HEADER = struct.Struct(f">4sBI{_SALT_SIZE}s{_PREFIX_SIZE}s")
HEADER_SIZE = _HEADER.size
_MAX_SEGMENTS = 2**32 - 1

Sink = Callable[[bytes], object]


def new_data_key() -> bytes:
    """A fresh random AES-256 data key (one per stored object)."""
    return AESGCM.generate_key(bit_length=256)


@dataclass(frozen=True)
class StreamHeader:
    """The parsed, not yet authenticated, header of a stream."""

    segment_size: int
    salt: bytes
    nonce_prefix: bytes

    def to_bytes(self) -> bytes:
        return _HEADER.pack(MAGIC, FORMAT_VERSION, self.segment_size, self.salt, self.nonce_prefix)

    @classmethod
    def parse(cls, raw: bytes, *, name: str) -> StreamHeader:
        if len(raw) < HEADER_SIZE:
            raise IntegrityError(f"{name}: truncated before the end of its header.")
        magic, version, segment_size, salt, prefix = _HEADER.unpack(raw)
        if magic != MAGIC:
            raise IntegrityError(f"{name}: not a fedvault encrypted object (bad magic bytes).")
        if version != FORMAT_VERSION:
            raise IntegrityError(
                f"{name}: unknown format version {version} (this build reads {FORMAT_VERSION})."
            )
        if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
            raise IntegrityError(f"{name}: header names an impossible segment size.")
        return cls(segment_size=segment_size, salt=salt, nonce_prefix=prefix)


def ciphertext_size(plaintext_size: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    """Size in bytes of the stream that ``plaintext_size`` bytes encrypt to."""
    segments = max(1, -(-plaintext_size // segment_size))
    return HEADER_SIZE + plaintext_size + segments * TAG_SIZE


def _segment_cipher(data_key: bytes, header: StreamHeader, associated_data: bytes) -> AESGCM:
    if len(data_key) != KEY_SIZE:
        raise ConfigError(f"A data key must be {KEY_SIZE} bytes, got {len(data_key)}.")
    key = HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_SIZE,
        salt=header.salt,
        info=b"fedvault-stream-v1\x00" + associated_data,
    ).derive(data_key)
    return AESGCM(key)


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    return prefix + struct.pack(">I?", counter, last)


def _read_full(source: BinaryIO, size: int) -> bytes:
    """Read exactly ``size`` bytes unless the stream ends first."""
    parts = []
    while size:
        chunk = source.read(size)
        if not chunk:
            break
        parts.append(chunk)
        size -= len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def encrypt_stream(
    source: BinaryIO,
    sink: Sink,
    *,
    data_key: bytes,
    associated_data: bytes,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
) -> int:
    """Encrypt everything ``source`` yields into ``sink``, one segment at a time.

    Args:
        source: a binary stream read to its end.
        sink: called with each piece of output in order (e.g. a file's ``write``).
        data_key: the object's 32-byte data key.
        associated_data: bytes naming the object; decryption must pass the same.
        segment_size: plaintext bytes per segment.

    Returns:
        The number of plaintext bytes encrypted.
    """
    if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
        raise ConfigError(
            f"Segment size must be between {MIN_SEGMENT_SIZE} and {MAX_SEGMENT_SIZE} bytes."
        )
    header = StreamHeader(
        segment_size=segment_size,
        salt=os.urandom(_SALT_SIZE),
        nonce_prefix=os.urandom(_PREFIX_SIZE),
    )
    header_bytes = header.to_bytes()
    cipher = _segment_cipher(data_key, header, associated_data)
    sink(header_bytes)
    total, counter = 0, 0
    current = _read_full(source, segment_size)
    while True:
        following = _read_full(source, segment_size) if len(current) == segment_size else b""
        last = not following
        if counter > _MAX_SEGMENTS:
            raise ConfigError("Object too large for this segment size; use larger segments.")
        sink(cipher.encrypt(_nonce(header.nonce_prefix, counter, last), current, header_bytes))
        total += len(current)
        counter += 1
        if last:
            return total
        current = following


def decrypt_segments(
    source: BinaryIO, *, data_key: bytes, associated_data: bytes, name: str
) -> Iterator[bytes]:
    """Yield authenticated plaintext segments of a stream, in order.

    Every segment is authenticated before it is yielded. A stream cut short fails only at
    its end, so treat what was yielded as incomplete until the iterator finishes.

    Raises:
        IntegrityError: bad header, wrong key or associated data, a changed, missing,
            reordered or extra segment, or a stream cut short.
    """
    header_bytes = _read_full(source, HEADER_SIZE)
    header = StreamHeader.parse(header_bytes, name=name)
    cipher = _segment_cipher(data_key, header, associated_data)
    chunk = header.segment_size + TAG_SIZE
    current = _read_full(source, chunk)
    if len(current) < TAG_SIZE:
        raise IntegrityError(f"{name}: truncated (no complete segment after the header).")
    counter = 0
    while True:
        following = _read_full(source, chunk) if len(current) == chunk else b""
        last = not following
        try:
            plain = cipher.decrypt(
                _nonce(header.nonce_prefix, counter, last), current, header_bytes
            )
        except InvalidTag:
            raise IntegrityError(
                f"{name}: segment {counter} failed authentication: the object was altered, "
                "truncated, reordered or moved, or the key is wrong. Discard any output."
            ) from None
        yield plain
        if last:
            return
        if len(following) < TAG_SIZE:
            raise IntegrityError(f"{name}: truncated inside segment {counter + 1}.")
        current = following
        counter += 1


def decrypt_stream(
    source: BinaryIO, sink: Sink, *, data_key: bytes, associated_data: bytes, name: str
) -> int:
    """Decrypt a whole stream into ``sink``; returns the plaintext size.

    ``sink`` may receive earlier segments before a later one fails; write into a temporary
    file and discard it on ``IntegrityError`` (the model store does).
    """
    total = 0
    for plain in decrypt_segments(
        source, data_key=data_key, associated_data=associated_data, name=name
    ):
        sink(plain)
        total += len(plain)
    return total
