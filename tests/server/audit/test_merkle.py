"""Merkle roots and proofs agree with RFC 6962's recursive definitions; bad proofs fail."""

from __future__ import annotations

import hashlib

import pytest

from fedvault.server.audit.merkle import (
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    prefix_ranges,
    verify_consistency,
    verify_inclusion,
)
from tests.server.audit import merkle_reference as ref

LEAVES = [leaf_hash(f"event {i}".encode()) for i in range(40)]


def test_leaf_and_empty_hashes_follow_rfc6962() -> None:
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert CompactRange().root() == hashlib.sha256(b"").digest()


def test_compact_range_root_equals_mth_at_every_size() -> None:
    compact = CompactRange()
    for n in range(1, len(LEAVES) + 1):
        compact.append(LEAVES[n - 1])
        assert compact.root() == ref.mth(LEAVES[:n])
        assert CompactRange(n, compact.nodes).root() == ref.mth(LEAVES[:n])


def test_inclusion_proofs_equal_the_rfc_and_verify() -> None:
    for n in range(1, 34):
        root = ref.mth(LEAVES[:n])
        for m in range(n):
            proof = inclusion_proof(LEAVES[:n], m)
            assert proof == ref.path(m, LEAVES[:n])
            assert ref.root_from_path(m, n, LEAVES[m], proof) == root
            assert verify_inclusion(leaf=LEAVES[m], index=m, tree_size=n, path=proof, root=root)


def test_consistency_proofs_equal_the_rfc_and_verify() -> None:
    for n in range(1, 34):
        new_root = ref.mth(LEAVES[:n])
        for m in range(1, n + 1):
            proof = consistency_proof(LEAVES[:n], m)
            old_root = ref.mth(LEAVES[:m])
            assert proof == ref.proof(m, LEAVES[:n])
            if m < n:
                assert ref.roots_from_proof(m, n, proof, old_root) == (old_root, new_root)
            assert verify_consistency(
                first=m, second=n, first_root=old_root, second_root=new_root, path=proof
            )


# The tree size is bound by the signed checkpoint that carries it, not by the proof alone.
@pytest.mark.parametrize(("m", "n"), [(0, 1), (5, 13), (12, 13), (15, 16), (7, 32)])
def test_altered_inclusion_proofs_fail(m: int, n: int) -> None:
    if m >= n:
        pytest.skip("no such leaf")
    root = ref.mth(LEAVES[:n])
    proof = inclusion_proof(LEAVES[:n], m)
    ok = {"leaf": LEAVES[m], "index": m, "tree_size": n, "path": proof, "root": root}
    assert verify_inclusion(**ok)  # type: ignore[arg-type]
    bad_path = [*proof[:-1], hashlib.sha256(b"x").digest()] if proof else [LEAVES[0]]
    for change in (
        {"leaf": LEAVES[(m + 1) % n] if n > 1 else hashlib.sha256(b"y").digest()},
        {"index": (m + 1) % n if n > 1 else 1},
        {"path": bad_path},
        {"path": [*proof, LEAVES[0]]},
        {"root": hashlib.sha256(b"another root").digest()},
    ):
        assert not verify_inclusion(**(ok | change)), change  # type: ignore[arg-type]


@pytest.mark.parametrize(("m", "n"), [(1, 2), (3, 7), (4, 8), (6, 17), (16, 33)])
def test_altered_consistency_proofs_fail(m: int, n: int) -> None:
    old, new = ref.mth(LEAVES[:m]), ref.mth(LEAVES[:n])
    proof = consistency_proof(LEAVES[:n], m)
    ok = {"first": m, "second": n, "first_root": old, "second_root": new, "path": proof}
    assert verify_consistency(**ok)  # type: ignore[arg-type]
    forked = [leaf_hash(b"forged"), *LEAVES[1:n]]
    for change in (
        {"first_root": ref.mth(forked[:m])},
        {"second_root": ref.mth(forked)},
        {"path": proof[:-1]},
        {"path": [*proof[:-1], LEAVES[0]]},
        {"first": m + 1 if m + 1 < n else m - 1},
    ):
        assert not verify_consistency(**(ok | change)), change  # type: ignore[arg-type]


@pytest.mark.parametrize(("first", "second"), [(0, 5), (8, 7), (16, 16), (32, 1), (64, 63)])
def test_ranges_built_apart_join_into_the_whole_tree(first: int, second: int) -> None:
    """Leaves hashed in separate pieces (as parallel verification does) give the root of
    hashing them in one piece, for every split at a power-of-two boundary."""
    leaves = [leaf_hash(bytes([i % 256, i // 256])) for i in range(first + second)]
    head, tail = CompactRange(), CompactRange()
    for leaf in leaves[:first]:
        head.append(leaf)
    for leaf in leaves[first:]:
        tail.append(leaf)
    joined = head.extend(tail)
    assert joined.size == first + second
    assert joined.root() == ref.mth(leaves)


def test_a_subtree_that_does_not_start_on_its_boundary_is_refused() -> None:
    three = CompactRange()
    for i in range(3):
        three.append(leaf_hash(bytes([i])))
    with pytest.raises(ValueError, match="starts at leaf 3"):
        three.append_subtree(leaf_hash(b"x"), 1)


def test_prefix_ranges_equal_ranges_built_leaf_by_leaf() -> None:
    sizes = range(len(LEAVES) + 1)
    ranges = prefix_ranges(LEAVES, sizes)
    compact = CompactRange()
    for n in sizes:
        assert ranges[n].size == n and ranges[n].nodes == compact.nodes
        assert ranges[n].root() == ref.mth(LEAVES[:n])
        if n < len(LEAVES):
            compact.append(LEAVES[n])
    assert prefix_ranges([], [0])[0].root() == CompactRange().root()


@pytest.mark.parametrize("size", [-1, len(LEAVES) + 1])
def test_a_prefix_longer_than_the_leaves_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match="No prefix"):
        prefix_ranges(LEAVES, [size])
