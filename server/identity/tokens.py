"""API tokens: the ``fvt_`` format with its checksum, and their keyed digests."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import zlib

__all__ = [
    "TOKEN_PREFIX",
    "TOKEN_LENGTH",
    "new_token",
    "new_token_id",
    "token_digest",
    "token_display_prefix",
    "verify_digest",
    "well_formed",
]

TOKEN_PREFIX = "fvt_"  # noqa: S105 -- a public marker for secret scanners, not a secret
_ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase  # base62
_RANDOM_CHARS = 32  # about 190 bits
_CHECKSUM_CHARS = 6  # 62**6 > 2**32: room for any CRC32
TOKEN_LENGTH = len(TOKEN_PREFIX) + _RANDOM_CHARS + _CHECKSUM_CHARS
_DISPLAY_CHARS = 4  # random characters shown in listings so users can tell tokens apart
_ALPHABET_SET = frozenset(_ALPHABET)


def _base62(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def _checksum(random_part: str) -> str:
    return _base62(zlib.crc32(random_part.encode("ascii")), _CHECKSUM_CHARS)


def new_token() -> str:
    """A fresh API token: ``fvt_`` + 32 random base62 characters + a 6-character CRC32."""
    random_part = "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_CHARS))
    return f"{TOKEN_PREFIX}{random_part}{_checksum(random_part)}"


def well_formed(token: str) -> bool:
    """Whether ``token`` has the token shape and a matching checksum (no secret involved).

    A typo or a truncated paste fails here, before any database lookup.
    """
    if not isinstance(token, str) or len(token) != TOKEN_LENGTH:
        return False
    if not token.startswith(TOKEN_PREFIX):
        return False
    body = token[len(TOKEN_PREFIX) :]
    if not set(body) <= _ALPHABET_SET:
        return False
    random_part, checksum = body[:_RANDOM_CHARS], body[_RANDOM_CHARS:]
    return hmac.compare_digest(checksum, _checksum(random_part))


def token_digest(token: str, pepper: bytes) -> str:
    """HMAC-SHA256 of ``token`` keyed by the server's pepper, as hex: what the database keeps."""
    return hmac.new(pepper, token.encode("utf-8"), hashlib.sha256).hexdigest()


def verify_digest(token: str, digest: str, pepper: bytes) -> bool:
    """Whether ``token`` has the stored ``digest``, compared in constant time."""
    return hmac.compare_digest(token_digest(token, pepper), digest)


def token_display_prefix(token: str) -> str:
    """The first characters of a token, safe to show so a user can tell tokens apart."""
    return token[: len(TOKEN_PREFIX) + _DISPLAY_CHARS]


def new_token_id() -> str:
    """A public identifier for a token row (shown in listings, used to revoke)."""
    return "tok_" + "".join(secrets.choice(_ALPHABET) for _ in range(16))
