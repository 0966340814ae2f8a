"""RFC 6962 Merkle trees written straight from the RFC's recursive definitions.

Independent of fedvault.server.audit.merkle (which is iterative): tests check the log's
roots and proofs against these.
"""

from __future__ import annotations

import hashlib


def H(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves: list[bytes]) -> bytes:
    """MTH(D[n]) over leaf hashes (already H(0x00 || data))."""
    if not leaves:
        return H(b"")
    if len(leaves) == 1:
        return leaves[0]
    k = split(len(leaves))
    return H(b"\x01" + mth(leaves[:k]) + mth(leaves[k:]))


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n])."""
    if len(leaves) == 1:
        return []
    k = split(len(leaves))
    if m < k:
        return [*path(m, leaves[:k]), mth(leaves[k:])]
    return [*path(m - k, leaves[k:]), mth(leaves[:k])]


def proof(m: int, leaves: list[bytes]) -> list[bytes]:
    """PROOF(m, D[n])."""

    def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
        if m == len(d):
            return [] if b else [mth(d)]
        k = split(len(d))
        if m <= k:
            return [*subproof(m, d[:k], b), mth(d[k:])]
        return [*subproof(m - k, d[k:], False), mth(d[:k])]

    return subproof(m, leaves, True)


def root_from_path(index: int, size: int, leaf: bytes, audit_path: list[bytes]) -> bytes:
    """Rebuild the root an audit path claims, following PATH's recursion backwards."""
    if size == 1:
        assert not audit_path, "a one-leaf tree has an empty path"
        return leaf
    assert audit_path, "path too short"
    k = split(size)
    *rest, last = audit_path
    if index < k:
        return H(b"\x01" + root_from_path(index, k, leaf, rest) + last)
    return H(b"\x01" + last + root_from_path(index - k, size - k, leaf, rest))


def roots_from_proof(
    m: int, n: int, consistency: list[bytes], first_root: bytes
) -> tuple[bytes, bytes]:
    """(old root, new root) a consistency proof claims, following SUBPROOF backwards."""

    def rebuild(m: int, n: int, p: list[bytes], b: bool) -> tuple[bytes, bytes]:
        if m == n:
            if b:
                assert not p, "proof too long"
                return first_root, first_root
            assert len(p) == 1, "proof has the wrong length"
            return p[0], p[0]
        assert p, "proof too short"
        k = split(n)
        *rest, last = p
        if m <= k:
            old, new = rebuild(m, k, rest, b)
            return old, H(b"\x01" + new + last)
        old, new = rebuild(m - k, n - k, rest, False)
        return H(b"\x01" + last + old), H(b"\x01" + last + new)

    return rebuild(m, n, consistency, True)
