"""Verify the whole log: every event's hash, the chain, every checkpoint's root and signature."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from fedvault.server.audit._chain import CHECKPOINTS, EVENTS, GENESIS
from fedvault.server.audit.canonical import EVENT_COLUMNS, event_json
from fedvault.server.audit.merkle import EMPTY_ROOT, CompactRange
from fedvault.server.audit.signing import Checkpoint, PublicKey

__all__ = ["VerifyReport", "iter_rows", "verify_log"]

_CHUNK = 20_000


@dataclass(frozen=True)
class VerifyReport:
    """What verification found. ``problem`` is None when the log is intact.

    ``first_bad_event`` names the first event that is missing, altered or out of place;
    ``failed_checkpoint`` the tree size of the first checkpoint that does not hold.
    """

    events: int
    checkpoints: int
    signed_size: int
    first_bad_event: int | None = None
    failed_checkpoint: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def unsigned(self) -> int:
        """Events after the newest valid checkpoint (not yet protected against truncation)."""
        return max(0, self.events - self.signed_size)


@dataclass
class _Signed:
    checkpoint: Checkpoint | None
    label: str


def iter_rows(
    engine: Engine, columns: tuple[str, ...], *, upto: int | None = None
) -> Iterator[Any]:
    """Rows of ``columns`` (the first being ``seq``) in sequence order, fetched in chunks."""
    mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
    head = f"SELECT {', '.join(columns)} FROM {EVENTS.name}"  # noqa: S608  (fixed names)
    bound = f" AND seq <= {int(upto)}" if upto is not None else ""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(f"{head} WHERE 1=1{bound} ORDER BY seq LIMIT {_CHUNK}")
        while rows := cursor.fetchall():
            yield from rows
            if len(rows) < _CHUNK:
                break
            cursor.execute(
                f"{head} WHERE seq > {mark}{bound} ORDER BY seq LIMIT {_CHUNK}", (rows[-1][0],)
            )
        cursor.close()
    finally:
        raw.close()


def _load_checkpoints(
    engine: Engine, key: PublicKey, trusted: Checkpoint | None
) -> dict[int, list[_Signed]]:
    by_size: dict[int, list[_Signed]] = defaultdict(list)
    with engine.connect() as conn:
        rows = conn.execute(
            select(CHECKPOINTS).order_by(CHECKPOINTS.c.tree_size, CHECKPOINTS.c.id)
        ).mappings()
        for row in rows:
            label = f"checkpoint {row['id']} ({row['tree_size']} events)"
            try:
                checkpoint: Checkpoint | None = Checkpoint(
                    origin=key.origin,
                    tree_size=int(row["tree_size"]),
                    root=bytes.fromhex(row["root"]),
                    key_id=bytes.fromhex(row["key_id"]),
                    signature=bytes.fromhex(row["signature"]),
                )
            except (ValueError, TypeError):
                checkpoint = None
            by_size[int(row["tree_size"])].append(_Signed(checkpoint, label))
    if trusted is not None:
        by_size[trusted.tree_size].append(
            _Signed(trusted, f"the saved checkpoint ({trusted.tree_size} events)")
        )
    return by_size


def _check_signed(signed: list[_Signed], key: PublicKey, root: bytes) -> str | None:
    for s in signed:
        if s.checkpoint is None or not key.verify(s.checkpoint):
            return (
                f"{s.label}: its signature does not verify with the public key "
                f"{key.key_id.hex()}: it was forged, altered, or signed by another key."
            )
        if s.checkpoint.root != root:
            return (
                f"{s.label}: its signed Merkle root does not match the events; events it "
                "covers were altered and the hash chain recomputed to hide it."
            )
    return None


def verify_log(
    engine: Engine, public_key: PublicKey, *, trusted: Checkpoint | None = None
) -> VerifyReport:
    """Recompute every event's hash and the chain, and check every checkpoint.

    Works on any copy of the database with only the public key: nothing is written.

    Args:
        engine: the database holding the log.
        public_key: the key checkpoints must be signed with (exported beforehand).
        trusted: a checkpoint saved outside the database earlier; the log must still
            contain it, which detects truncation even if newer checkpoints were deleted.
    """
    by_size = _load_checkpoints(engine, public_key, trusted)
    count = sum(len(v) for v in by_size.values())
    sizes = sorted(by_size)
    tree = CompactRange()
    signed_size, prev, prev_hex, last_time = 0, GENESIS, GENESIS.hex(), ""
    verified_at = 0  # the size of the newest checkpoint checked so far
    pending = iter(sizes)
    boundary = next(pending, None)

    def fail(problem: str, *, event: int | None = None, cp: int | None = None) -> VerifyReport:
        return VerifyReport(tree.size, count, signed_size, event, cp, problem)

    if boundary == 0:
        if problem := _check_signed(by_size[0], public_key, EMPTY_ROOT):
            return fail(problem, cp=0)
        boundary = next(pending, None)
    sha256 = hashlib.sha256
    for row in iter_rows(engine, (*EVENT_COLUMNS, "prev_hash", "hash")):
        seq = row[0]
        expected = tree.size + 1
        if seq != expected:
            if isinstance(seq, int) and seq > expected:
                what = f"event {expected} is missing: deleted, or the events after it renumbered"
                return fail(what, event=expected)
            return fail(
                f"an event numbered {seq!r} was inserted before event {expected}", event=expected
            )
        try:
            digest = sha256(b"\x00" + prev + event_json(*row[:13]).encode()).digest()
        except (TypeError, UnicodeEncodeError):
            digest = b""
        if digest.hex() != row[14] or row[13] != prev_hex:
            reason = (
                "does not follow the event before it (reordered, inserted or removed)"
                if row[13] != prev_hex
                else "does not match its hash: it was altered"
            )
            return fail(f"event {seq} {reason}", event=seq)
        if row[1] < last_time:
            return fail(f"event {seq} is dated before the event preceding it", event=seq)
        tree.append(digest)
        prev, prev_hex, last_time = digest, row[14], row[1]
        if tree.size == boundary:
            if problem := _check_signed(by_size[boundary], public_key, tree.root()):
                first = verified_at + 1
                return fail(f"{problem} (between events {first} and {boundary})", cp=boundary)
            signed_size = verified_at = boundary
            boundary = next(pending, None)
    if boundary is not None:
        label = by_size[boundary][0].label
        return fail(
            f"{label} covers {boundary} events but the log holds only {tree.size}: the "
            f"newest events from {tree.size + 1} on were removed",
            event=tree.size + 1,
            cp=boundary,
        )
    return VerifyReport(tree.size, count, signed_size)
