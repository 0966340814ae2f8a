"""Inclusion and consistency proofs from the log hold under an independent RFC 6962
implementation, and refuse what they cannot prove."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import pytest
import rfc8785
from sqlalchemy import text
from sqlalchemy.engine import Engine

from fedvault.common.errors import ConfigError, IntegrityError, NotFound
from fedvault.server.audit import AuditLog, SigningKey, prove_consistency, prove_inclusion
from fedvault.server.audit.canonical import EVENT_COLUMNS
from tests.server.audit import merkle_reference as ref
from tests.server.audit.factories import drop_triggers, event


@pytest.fixture
def log21(make_log: Callable[..., AuditLog]) -> AuditLog:
    log = make_log(checkpoint_every=7)  # checkpoints at 7, 14, 21
    for i in range(21):
        log.append(**event(details={"i": i, "score": i / 3}))
    return log


def _independent_leaves(engine: Engine) -> list[bytes]:
    """Leaf hashes recomputed from the stored columns with rfc8785, not the log's code."""
    columns = ", ".join((*EVENT_COLUMNS, "prev_hash"))
    leaves, prev = [], bytes(32)
    with engine.connect() as conn:
        for row in conn.execute(text(f"SELECT {columns} FROM audit_events ORDER BY seq")):
            fields = dict(row._mapping)
            assert bytes.fromhex(fields.pop("prev_hash")) == prev
            fields["details"] = json.loads(fields["details"])
            prev = hashlib.sha256(b"\x00" + prev + rfc8785.dumps(fields)).digest()
            leaves.append(prev)
    return leaves


def test_inclusion_proofs_hold_independently(
    log21: AuditLog, engine: Engine, signing_key: SigningKey
) -> None:
    leaves = _independent_leaves(engine)
    for seq in (1, 2, 7, 8, 13, 14):
        proof = prove_inclusion(engine, signing_key.public, seq, tree_size=14)
        assert proof.checkpoint.root == ref.mth(leaves[:14])
        assert proof.leaf == leaves[seq - 1]
        assert ref.root_from_path(seq - 1, 14, proof.leaf, proof.path) == proof.checkpoint.root
        assert proof.verify(signing_key.public)
    newest = prove_inclusion(engine, signing_key.public, 21)
    assert newest.checkpoint.tree_size == 21
    assert ref.root_from_path(20, 21, leaves[20], newest.path) == ref.mth(leaves)


def test_consistency_proofs_hold_independently(
    log21: AuditLog, engine: Engine, signing_key: SigningKey
) -> None:
    leaves = _independent_leaves(engine)
    for first, second in ((7, 14), (7, 21), (14, 21)):
        proof = prove_consistency(engine, signing_key.public, first, second)
        old, new = ref.mth(leaves[:first]), ref.mth(leaves[:second])
        assert (proof.first.root, proof.second.root) == (old, new)
        assert ref.roots_from_proof(first, second, proof.path, old) == (old, new)
        assert proof.verify(signing_key.public)
    assert prove_consistency(engine, signing_key.public, 7).second.tree_size == 21


def test_what_cannot_be_proved_is_a_clear_error(
    log21: AuditLog, engine: Engine, signing_key: SigningKey
) -> None:
    key = signing_key.public
    log21.append(**event())  # event 22: not under a checkpoint yet
    with pytest.raises(ConfigError, match="not covered by the checkpoint at 21"):
        prove_inclusion(engine, key, 22)
    with pytest.raises(ConfigError, match="not covered"):
        prove_inclusion(engine, key, 0)
    with pytest.raises(NotFound, match="no signed checkpoint at 5 events"):
        prove_inclusion(engine, key, 1, tree_size=5)
    with pytest.raises(ConfigError, match="older, smaller checkpoint first"):
        prove_consistency(engine, key, 21, 14)
    with pytest.raises(IntegrityError, match="not signed by the key"):
        prove_inclusion(engine, SigningKey.generate().public, 1)


def test_no_checkpoint_yet(make_log: Callable[..., AuditLog], engine: Engine) -> None:
    make_log().append(**event())
    with pytest.raises(NotFound, match="no signed checkpoint yet"):
        prove_inclusion(engine, SigningKey.generate().public, 1)


def test_a_rewritten_log_cannot_prove_against_its_old_checkpoint(
    log21: AuditLog, engine: Engine, signing_key: SigningKey
) -> None:
    log21.close()
    drop_triggers(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET hash = :h WHERE seq = 3"), {"h": "00" * 32})
    with pytest.raises(IntegrityError, match="do not match the checkpoint"):
        prove_inclusion(engine, signing_key.public, 5, tree_size=14)
