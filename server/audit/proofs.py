"""Inclusion and consistency proofs from the log, against its signed checkpoints."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.engine import Engine

from fedvault.common.errors import ConfigError, IntegrityError, NotFound
from fedvault.server.audit._chain import CHECKPOINTS, EVENTS
from fedvault.server.audit.canonical import EVENT_COLUMNS, event_json
from fedvault.server.audit.merkle import (
    consistency_proof,
    inclusion_proof,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from fedvault.server.audit.signing import Checkpoint, PublicKey
from fedvault.server.audit.verify import iter_rows

__all__ = [
    "ConsistencyProof",
    "InclusionProof",
    "prove_consistency",
    "prove_inclusion",
    "signed_checkpoint",
]


@dataclass(frozen=True)
class InclusionProof:
    """Event ``seq`` is leaf ``seq - 1`` of the tree the checkpoint signs.

    The leaf is SHA-256(0x00 || prev_hash || canonical JSON of the event).
    """

    seq: int
    event_json: str
    prev_hash: bytes
    leaf: bytes
    path: list[bytes]
    checkpoint: Checkpoint

    def verify(self, key: PublicKey) -> bool:
        """Check the leaf against the event, the path against the root, and the signature."""
        data = b"\x00" + self.prev_hash + self.event_json.encode()
        return (
            hashlib.sha256(data).digest() == self.leaf
            and verify_inclusion(
                leaf=self.leaf,
                index=self.seq - 1,
                tree_size=self.checkpoint.tree_size,
                path=self.path,
                root=self.checkpoint.root,
            )
            and key.verify(self.checkpoint)
        )


@dataclass(frozen=True)
class ConsistencyProof:
    """The log signed by ``second`` extends the log signed by ``first``, unchanged."""

    first: Checkpoint
    second: Checkpoint
    path: list[bytes]

    def verify(self, key: PublicKey) -> bool:
        return (
            key.verify(self.first)
            and key.verify(self.second)
            and verify_consistency(
                first=self.first.tree_size,
                second=self.second.tree_size,
                first_root=self.first.root,
                second_root=self.second.root,
                path=self.path,
            )
        )


def signed_checkpoint(engine: Engine, key: PublicKey, tree_size: int | None = None) -> Checkpoint:
    """The newest checkpoint (or the one at ``tree_size`` events), its signature checked.

    Raises:
        NotFound: there is none (of that size).
        IntegrityError: its signature does not verify with ``key``.
    """
    query = select(CHECKPOINTS).order_by(CHECKPOINTS.c.tree_size.desc(), CHECKPOINTS.c.id.desc())
    if tree_size is not None:
        query = query.where(CHECKPOINTS.c.tree_size == tree_size)
    with engine.connect() as conn:
        row = conn.execute(query.limit(1)).mappings().first()
    if row is None:
        what = f"at {tree_size} events" if tree_size is not None else "yet"
        raise NotFound(f"The audit log has no signed checkpoint {what}.")
    checkpoint = Checkpoint(
        origin=key.origin,
        tree_size=int(row["tree_size"]),
        root=bytes.fromhex(row["root"]),
        key_id=bytes.fromhex(row["key_id"]),
        signature=bytes.fromhex(row["signature"]),
    )
    if not key.verify(checkpoint):
        raise IntegrityError(
            f"The checkpoint at {checkpoint.tree_size} events is not signed by the key "
            f"{key.key_id.hex()}; run `fedvault audit verify`."
        )
    return checkpoint


def _leaves(engine: Engine, upto: int) -> list[bytes]:
    leaves = [bytes.fromhex(h) for _, h in iter_rows(engine, ("seq", "hash"), upto=upto)]
    if len(leaves) != upto:
        raise IntegrityError(
            f"The log holds {len(leaves)} of the {upto} events its checkpoint signed; "
            "run `fedvault audit verify`."
        )
    return leaves


def prove_inclusion(
    engine: Engine, key: PublicKey, seq: int, *, tree_size: int | None = None
) -> InclusionProof:
    """Prove event ``seq`` is in the log, against a checkpoint (the newest by default).

    Raises:
        NotFound: no such event, or no checkpoint (of that size).
        ConfigError: the checkpoint does not cover the event yet.
        IntegrityError: the stored event, hashes or checkpoint do not agree.
    """
    checkpoint = signed_checkpoint(engine, key, tree_size)
    if not 1 <= seq <= checkpoint.tree_size:
        raise ConfigError(
            f"Event {seq} is not covered by the checkpoint at {checkpoint.tree_size} events; "
            "events are numbered from 1, and new ones are covered by the next checkpoint."
        )
    with engine.connect() as conn:
        row = conn.execute(
            select(*(EVENTS.c[c] for c in (*EVENT_COLUMNS, "prev_hash", "hash"))).where(
                EVENTS.c.seq == seq
            )
        ).first()
    if row is None:
        raise NotFound(f"No audit event {seq}.")
    leaves = _leaves(engine, checkpoint.tree_size)
    if root_of(leaves) != checkpoint.root:
        raise IntegrityError(
            f"The events do not match the checkpoint at {checkpoint.tree_size} events; run "
            "`fedvault audit verify`."
        )
    proof = InclusionProof(
        seq=seq,
        event_json=event_json(*row[:13]),
        prev_hash=bytes.fromhex(row[13]),
        leaf=leaves[seq - 1],
        path=inclusion_proof(leaves, seq - 1),
        checkpoint=checkpoint,
    )
    if not proof.verify(key):
        raise IntegrityError(f"Event {seq} does not match its stored hash; run verify.")
    return proof


def prove_consistency(
    engine: Engine, key: PublicKey, first: int, second: int | None = None
) -> ConsistencyProof:
    """Prove the checkpoint at ``second`` events extends the one at ``first``.

    Raises:
        NotFound: no checkpoint of one of the sizes.
        ConfigError: ``first`` is not smaller than ``second``.
        IntegrityError: the checkpoints disagree with each other or with the events.
    """
    old = signed_checkpoint(engine, key, first)
    new = signed_checkpoint(engine, key, second)
    if not old.tree_size < new.tree_size:
        raise ConfigError(
            f"A consistency proof needs an older, smaller checkpoint first: {old.tree_size} "
            f"is not smaller than {new.tree_size}."
        )
    leaves = _leaves(engine, new.tree_size)
    proof = ConsistencyProof(old, new, consistency_proof(leaves, old.tree_size))
    if not proof.verify(key):
        raise IntegrityError(
            f"The checkpoints at {old.tree_size} and {new.tree_size} events are not "
            "consistent: the log was rewritten between them. Run `fedvault audit verify`."
        )
    return proof
