"""Envelope encryption of one stored object: a fresh data key, wrapped by the current KEK."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from fedvault.common.crypto.kek import KekProvider, WrappedKey
from fedvault.common.crypto.streaming import (
    DEFAULT_SEGMENT_SIZE,
    Sink,
    decrypt_segments,
    encrypt_stream,
    new_data_key,
)
from fedvault.common.errors import ConfigError

__all__ = ["object_context", "open_object", "rewrap", "seal_object"]


def object_context(object_id: str, version: int) -> bytes:
    """The associated data that binds ciphertext and wrapped key to one object version."""
    if not object_id or "\x00" in object_id:
        raise ConfigError(f"Invalid object id {object_id!r}.")
    return b"fedvault-object-v1\x00" + object_id.encode() + b"\x00" + str(int(version)).encode()


def seal_object(
    source: BinaryIO,
    sink: Sink,
    *,
    kek: KekProvider,
    object_id: str,
    version: int,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
) -> tuple[WrappedKey, int]:
    """Encrypt ``source`` into ``sink`` under a new data key; return the wrapped key and size.

    The data key exists only in memory and only as long as this call.
    """
    context = object_context(object_id, version)
    data_key = new_data_key()
    wrapped = kek.wrap(data_key, context=context)
    size = encrypt_stream(
        source, sink, data_key=data_key, associated_data=context, segment_size=segment_size
    )
    return wrapped, size


def open_object(
    source: BinaryIO, *, kek: KekProvider, wrapped: WrappedKey, object_id: str, version: int
) -> Iterator[bytes]:
    """Yield the authenticated plaintext of an object version, segment by segment.

    Raises:
        IntegrityError: the key record or any byte of the object does not authenticate.
        KeyMaterialError: the KEK version it was wrapped under is unavailable.
    """
    context = object_context(object_id, version)
    data_key = kek.unwrap(wrapped, context=context)
    name = f"{object_id} version {version}"
    return decrypt_segments(source, data_key=data_key, associated_data=context, name=name)


def rewrap(wrapped: WrappedKey, *, kek: KekProvider, object_id: str, version: int) -> WrappedKey:
    """Re-wrap a data key under the current KEK version; the object's ciphertext is untouched."""
    context = object_context(object_id, version)
    return kek.wrap(kek.unwrap(wrapped, context=context), context=context)
