"""Where the log ends: the newest event's hash and time, and the Merkle tree over all events."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from sqlalchemy import Connection, Table, select
from sqlmodel import SQLModel

from fedvault.common.errors import IntegrityError
from fedvault.server.audit.merkle import CompactRange
from fedvault.server.audit.tables import AuditCheckpoint, AuditEvent

__all__ = ["CHECKPOINTS", "EVENTS", "GENESIS", "Tail", "latest_checkpoint", "load_tail", "tail_row"]

log = logging.getLogger("fedvault.server.audit")

EVENTS: Table = SQLModel.metadata.tables[AuditEvent.__tablename__]
CHECKPOINTS: Table = SQLModel.metadata.tables[AuditCheckpoint.__tablename__]
GENESIS = bytes(32)  # the "previous hash" of the first event
_DAMAGED = "Run `fedvault audit verify`; nothing more is recorded until the log is restored."


@dataclass
class Tail:
    """The state a writer continues from."""

    size: int
    hash: bytes
    time: str
    tree: CompactRange
    checkpointed: int

    def copy(self) -> Tail:
        return Tail(self.size, self.hash, self.time, self.tree.copy(), self.checkpointed)


# Built once: the writer reads the tail before every batch, and building the statement
# costs several times what running it does.
_TAIL = select(EVENTS.c.seq, EVENTS.c.hash, EVENTS.c.time).order_by(EVENTS.c.seq.desc()).limit(1)


def tail_row(conn: Connection) -> tuple[int, str, str] | None:
    """(seq, hash, time) of the newest event, or None for an empty log."""
    row = conn.execute(_TAIL).first()
    return None if row is None else (row[0], row[1], row[2])


def latest_checkpoint(conn: Connection) -> AuditCheckpoint | None:
    row = (
        conn.execute(
            select(CHECKPOINTS)
            .order_by(CHECKPOINTS.c.tree_size.desc(), CHECKPOINTS.c.id.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )
    return None if row is None else AuditCheckpoint.model_validate(dict(row))


def _frontier(checkpoint: AuditCheckpoint) -> CompactRange | None:
    try:
        nodes = [bytes.fromhex(h) for h in json.loads(checkpoint.frontier)]
        tree = CompactRange(checkpoint.tree_size, nodes)
    except (ValueError, TypeError):
        return None
    return tree if tree.root().hex() == checkpoint.root else None


def load_tail(conn: Connection) -> Tail:
    """Rebuild the writer's state from the newest checkpoint and the events after it.

    Raises:
        IntegrityError: events are missing or unreadable, so the chain cannot continue.
    """
    newest = tail_row(conn)
    checkpoint = latest_checkpoint(conn)
    tree = CompactRange()
    checkpointed = checkpoint.tree_size if checkpoint else 0
    if checkpoint is not None:
        cached = _frontier(checkpoint)
        if cached is None:
            log.warning("Checkpoint %d has no usable frontier; rehashing the log", checkpoint.id)
        else:
            tree = cached
    if newest is None and checkpointed:
        raise IntegrityError(
            f"The audit log is empty but was signed at {checkpointed} events. " + _DAMAGED
        )
    rows = conn.execute(
        select(EVENTS.c.seq, EVENTS.c.hash).where(EVENTS.c.seq > tree.size).order_by(EVENTS.c.seq)
    )
    try:  # an unfinished statement would keep SQLite's write lock after an error
        for seq, hex_hash in rows:
            if seq != tree.size + 1:
                raise IntegrityError(f"Audit event {tree.size + 1} is missing. " + _DAMAGED)
            try:
                tree.append(bytes.fromhex(hex_hash))
            except (ValueError, TypeError):
                raise IntegrityError(
                    f"Audit event {seq} has an unreadable hash. " + _DAMAGED
                ) from None
    finally:
        rows.close()
    if newest is None:
        return Tail(0, GENESIS, "", tree, 0)
    seq, hex_hash, time = newest
    if seq != tree.size or seq < checkpointed:
        raise IntegrityError(
            f"The audit log ends at event {seq} but holds {tree.size} events and was signed "
            f"at {checkpointed}. " + _DAMAGED
        )
    try:
        newest_hash = bytes.fromhex(hex_hash)
    except (ValueError, TypeError):
        raise IntegrityError(f"Audit event {seq} has an unreadable hash. " + _DAMAGED) from None
    return Tail(seq, newest_hash, time, tree, checkpointed)
