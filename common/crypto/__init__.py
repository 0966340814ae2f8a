"""Envelope encryption: streaming AES-256-GCM objects under data keys wrapped by versioned KEKs."""

from fedvault.common.crypto.envelope import object_context, open_object, rewrap, seal_object
from fedvault.common.crypto.kek import (
    ENV_KEK,
    EnvKek,
    KekInfo,
    KekProvider,
    LocalKeyring,
    WrappedKey,
)
from fedvault.common.crypto.streaming import (
    DEFAULT_SEGMENT_SIZE,
    ciphertext_size,
    decrypt_segments,
    decrypt_stream,
    encrypt_stream,
    new_data_key,
)

__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "ENV_KEK",
    "EnvKek",
    "KekInfo",
    "KekProvider",
    "LocalKeyring",
    "WrappedKey",
    "ciphertext_size",
    "decrypt_segments",
    "decrypt_stream",
    "encrypt_stream",
    "new_data_key",
    "object_context",
    "open_object",
    "rewrap",
    "seal_object",
]
