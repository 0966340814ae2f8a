"""RFC 6962 / RFC 9162 Merkle trees: roots, inclusion and consistency proofs, and their checks."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "CompactRange",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "prefix_ranges",
    "root_of",
    "verify_consistency",
    "verify_inclusion",
]

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the hash of one leaf."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an inner node."""
    return hashlib.sha256(b"\x01" + left + right).digest()


class CompactRange:
    """The roots of the perfect subtrees that cover leaves ``[0, size)``, largest first.

    Enough to append leaves one at a time and to give the tree's root at any moment, in
    O(log size) memory.
    """

    def __init__(self, size: int = 0, nodes: Sequence[bytes] = ()):
        if size < 0 or len(nodes) != bin(size).count("1"):
            raise ValueError(f"A compact range of size {size} has one node per set bit.")
        self.size = size
        self.nodes = list(nodes)

    def append(self, leaf: bytes) -> None:
        """Add the leaf hash ``leaf`` as leaf number ``size``."""
        nodes = self.nodes
        nodes.append(leaf)
        carry = self.size
        while carry & 1:
            right = nodes.pop()
            nodes[-1] = hashlib.sha256(b"\x01" + nodes[-1] + right).digest()
            carry >>= 1
        self.size += 1

    def append_subtree(self, node: bytes, height: int) -> None:
        """Add the root of a perfect subtree of ``2**height`` leaves after the leaves so far.

        Raises:
            ValueError: ``size`` is not a multiple of ``2**height``, so no such subtree
                starts there.
        """
        if height < 0 or self.size & ((1 << height) - 1):
            raise ValueError(f"No perfect subtree of height {height} starts at leaf {self.size}.")
        nodes = self.nodes
        nodes.append(node)
        carry = self.size >> height
        while carry & 1:
            right = nodes.pop()
            nodes[-1] = hashlib.sha256(b"\x01" + nodes[-1] + right).digest()
            carry >>= 1
        self.size += 1 << height

    def extend(self, other: CompactRange) -> CompactRange:
        """A new range: these leaves followed by ``other``'s, which start at leaf ``size``.

        ``other`` was built from its own first leaf, which lines its subtrees up with the
        whole tree's when ``size`` is a multiple of a power of two above ``other.size``.

        Raises:
            ValueError: ``size`` is not such a multiple.
        """
        joined = self.copy()
        heights = [h for h in range(other.size.bit_length() - 1, -1, -1) if other.size >> h & 1]
        for node, height in zip(other.nodes, heights, strict=True):
            joined.append_subtree(node, height)
        return joined

    def root(self) -> bytes:
        """The RFC 6962 tree head of the leaves so far."""
        if not self.nodes:
            return EMPTY_ROOT
        root = self.nodes[-1]
        for node in reversed(self.nodes[:-1]):
            root = node_hash(node, root)
        return root

    def copy(self) -> CompactRange:
        return CompactRange(self.size, self.nodes)


def prefix_ranges(leaves: Sequence[bytes], sizes: Iterable[int]) -> dict[int, CompactRange]:
    """The compact range over ``leaves[:m]`` for each ``m`` in ``sizes``.

    Builds the tree level by level, so every inner node is hashed once in a tight loop
    rather than leaf by leaf; every prefix is then a lookup of at most one node per level.

    Raises:
        ValueError: a size is negative or larger than ``len(leaves)``.
    """
    levels = [leaves]
    sha256 = hashlib.sha256
    while len(levels[-1]) > 1:
        pairs = iter(levels[-1])  # an unpaired last node has no parent yet
        level = [sha256(b"\x01" + a + b).digest() for a, b in zip(pairs, pairs, strict=False)]
        levels.append(level)
    ranges = {}
    for size in sizes:
        if not 0 <= size <= len(leaves):
            raise ValueError(f"No prefix of {size} leaves in a list of {len(leaves)}.")
        nodes, covered = [], 0
        for height in range(size.bit_length() - 1, -1, -1):
            if size >> height & 1:
                nodes.append(levels[height][covered >> height])
                covered += 1 << height
        ranges[size] = CompactRange(size, nodes)
    return ranges


def root_of(leaves: Sequence[bytes]) -> bytes:
    """The tree head over a list of leaf hashes."""
    compact = CompactRange()
    for leaf in leaves:
        compact.append(leaf)
    return compact.root()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """RFC 9162 PATH(index, leaves): the audit path of one leaf."""
    if not 0 <= index < len(leaves):
        raise ValueError(f"Leaf {index} is not in a tree of {len(leaves)} leaves.")
    path: list[bytes] = []
    lo, hi = 0, len(leaves)
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append(root_of(leaves[lo + k : hi]))
            hi = lo + k
        else:
            path.append(root_of(leaves[lo : lo + k]))
            lo += k
    path.reverse()
    return path


def consistency_proof(leaves: Sequence[bytes], first: int) -> list[bytes]:
    """RFC 9162 PROOF(first, leaves): shows the first ``first`` leaves are a prefix."""
    n = len(leaves)
    if not 0 < first <= n:
        raise ValueError(f"A consistency proof needs 0 < first <= {n}, got {first}.")
    path: list[bytes] = []
    lo, hi, m, complete = 0, n, first, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            path.append(root_of(leaves[lo + k : hi]))
            hi = lo + k
        else:
            path.append(root_of(leaves[lo : lo + k]))
            lo, m, complete = lo + k, m - k, False
    if not complete:
        path.append(root_of(leaves[lo:hi]))
    path.reverse()
    return path


def verify_inclusion(
    *, leaf: bytes, index: int, tree_size: int, path: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 section 2.1.3.2: whether ``path`` proves ``leaf`` is leaf ``index``."""
    if not 0 <= index < tree_size:
        return False
    fn, sn, r = index, tree_size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    *, first: int, second: int, first_root: bytes, second_root: bytes, path: Sequence[bytes]
) -> bool:
    """RFC 9162 section 2.1.4.2: whether ``path`` proves tree ``first`` is a prefix."""
    if first == second:
        return not path and first_root == second_root
    if not 0 < first < second or not path:
        return first == 0 and not path and second > 0
    proof = list(path)
    if first & (first - 1) == 0:  # an exact power of two
        proof.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_root and sr == second_root and sn == 0
