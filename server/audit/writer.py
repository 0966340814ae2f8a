"""The one writer of the audit log: a thread that commits queued events in groups.

``append`` returns only once its event is committed (durable), so an action is reported
done only after it is on record, and a crash loses no acknowledged event. Waiting callers
share one commit, which is what makes durable appends fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any, NotRequired, Required, TypedDict, Unpack, cast

from sqlalchemy import Connection, insert, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from fedvault.common.errors import ConfigError, FedvaultError, StorageError
from fedvault.server.audit._chain import CHECKPOINTS, Tail, load_tail, tail_row
from fedvault.server.audit._insert import RowInserter
from fedvault.server.audit._waiters import Control, Pending, settle
from fedvault.server.audit.canonical import event_json_end, format_time
from fedvault.server.audit.events import Receipt, draft_event
from fedvault.server.audit.signing import Checkpoint, SigningKey
from fedvault.server.audit.tables import Outcome

__all__ = ["AuditLog", "EventFields"]

log = logging.getLogger("fedvault.server.audit")

_PG_LOCK = 0x66_76_61_75  # advisory lock id that serializes writers across processes


def _utcnow() -> datetime:
    return datetime.now(UTC)


class EventFields(TypedDict, total=False):
    """The fields of ``AuditLog.append`` (see ``draft_event`` for their rules)."""

    actor: Required[str]
    actor_type: Required[str]
    action: Required[str]
    resource_type: Required[str]
    resource_id: Required[str]
    outcome: Required[str | Outcome]
    project: NotRequired[str | None]
    policy: NotRequired[str | None]
    source: NotRequired[str | None]
    request_id: NotRequired[str | None]
    details: NotRequired[Mapping[str, Any] | None]


class AuditLog:
    """Append events to the log in one background thread; sign checkpoints as it goes.

    A checkpoint is signed every ``checkpoint_every`` events, after ``checkpoint_interval``
    seconds with unsigned events, and on ``close``. Several processes may each hold an
    ``AuditLog`` on one database: their commits are serialized by the database.

    Args:
        engine: the database (schema migrated).
        signing_key: the key that signs checkpoints.
        checkpoint_every: events between checkpoints (at most).
        checkpoint_interval: seconds an unsigned event waits for a checkpoint (at most).
        max_batch: events committed together (at most); 1 commits each on its own.
        clock: the current time (tests pass a fake one); an event's time never precedes
            the time of the event before it.
    """

    def __init__(
        self,
        *,
        engine: Engine,
        signing_key: SigningKey,
        checkpoint_every: int = 1024,
        checkpoint_interval: float = 30.0,
        max_batch: int = 4096,
        clock: Callable[[], datetime] = _utcnow,
    ):
        if checkpoint_every < 1 or max_batch < 1:
            raise ConfigError("checkpoint_every and max_batch must be positive integers.")
        if not checkpoint_interval > 0:
            raise ConfigError("checkpoint_interval must be a positive number of seconds.")
        self.engine = engine
        self.signing_key = signing_key
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval = checkpoint_interval
        self.max_batch = max_batch
        self._clock = clock
        self._queue: queue.SimpleQueue[Pending | Control] = queue.SimpleQueue()
        self._gate = threading.Lock()
        self._closed = False
        self._tail: Tail | None = None
        self._conn: Connection | None = None
        self._insert = RowInserter(engine.dialect)
        self._signed_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="fedvault-audit", daemon=True)
        self._thread.start()

    # --- callers -------------------------------------------------------------------------

    def submit(self, **fields: Unpack[EventFields]) -> Future[Receipt]:
        """Queue an event; the future resolves once it is committed.

        Raises:
            ConfigError: a field is invalid (nothing is queued).
            StorageError: the log is closed.
        """
        pending = Pending(draft_event(**fields))
        self._put(pending)
        return pending.future  # type: ignore[return-value]

    def append(self, **fields: Unpack[EventFields]) -> Receipt:
        """Record an event and return once it is committed.

        Raises:
            ConfigError: a field is invalid (nothing is recorded).
            StorageError: the event could not be committed; the action must not proceed.
            IntegrityError: the log on disk is damaged, so it cannot be extended.
        """
        return self.submit(**fields).result()

    async def append_async(self, **fields: Unpack[EventFields]) -> Receipt:
        """``append`` for asyncio code: waits for the commit without blocking the loop.

        Raises:
            ConfigError, StorageError, IntegrityError: as ``append``.
        """
        pending = Pending(draft_event(**fields), asyncio.get_running_loop())
        self._put(pending)
        return await cast("asyncio.Future[Receipt]", pending.future)

    def checkpoint(self) -> Checkpoint | None:
        """Sign a checkpoint now if any event is not yet covered by one; return it."""
        control = Control(stop=False)
        self._put(control)
        return control.future.result()

    def close(self) -> None:
        """Commit what is queued, sign a final checkpoint and stop the writer thread.

        Every event was acknowledged (or refused) on its own, so a final checkpoint that
        cannot be written is logged, not raised: the next writer signs those events.
        """
        control = Control(stop=True)
        with self._gate:
            if self._closed:
                return
            self._closed = True
            self._queue.put(control)
        self._thread.join()
        try:
            control.future.result()
        except FedvaultError as e:
            log.error("The final audit checkpoint was not written: %s", e)

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _put(self, item: Pending | Control) -> None:
        with self._gate:
            if self._closed:
                raise StorageError("The audit log is closed; nothing more can be recorded.")
            self._queue.put(item)

    # --- the writer thread ---------------------------------------------------------------

    def _timeout(self) -> float | None:
        tail = self._tail
        if tail is None or tail.size == tail.checkpointed:
            return None
        return max(0.0, self.checkpoint_interval - (time.monotonic() - self._signed_at))

    def _run(self) -> None:
        while True:
            try:
                items = [self._queue.get(timeout=self._timeout())]
            except queue.Empty:
                self._commit_batch([], [])
                continue
            while len(items) < self.max_batch:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            events = [i for i in items if isinstance(i, Pending)]
            controls = [i for i in items if isinstance(i, Control)]
            self._commit_batch(events, controls)
            if any(c.stop for c in controls):
                if self._conn is not None:
                    self._conn.close()
                return

    def _commit_batch(self, events: list[Pending], controls: list[Control]) -> None:
        try:
            receipts, checkpoint = self._commit(events, force=bool(controls))
        except Exception as e:  # noqa: BLE001  (every failure goes to the callers waiting on it)
            self._tail = None  # reload from the database before the next batch
            log.error("Audit commit failed: %s", e)
            if not isinstance(e, FedvaultError):
                reason = getattr(e, "orig", None) or e
                e = StorageError(
                    f"Could not commit {len(events)} audit event(s): {reason}. The actions "
                    "they record must not be reported as done."
                )
            settle(events, e)
            for control in controls:
                control.future.set_exception(e)
            return
        settle(events, receipts)
        for control in controls:
            control.future.set_result(checkpoint)

    def _connection(self) -> Connection:
        """The writer thread's own connection, kept between batches.

        Every call into the driver lets other threads take the GIL, and getting it back can
        wait a whole switch interval; a pooled connection per batch would add a ping and a
        reset to the few calls a batch needs (begin, read the tail, insert, commit).
        """
        if self._conn is None:
            self._conn = self.engine.connect()
        return self._conn

    def _commit(
        self, events: list[Pending], *, force: bool
    ) -> tuple[list[Receipt], Checkpoint | None]:
        conn = self._connection()
        try:
            return self._commit_on(conn, events, force=force)
        except BaseException:
            self._conn = None
            # Release the database's write lock now, not whenever the error is collected.
            with contextlib.suppress(SQLAlchemyError):
                conn.rollback()
            conn.invalidate()
            conn.close()
            raise

    def _commit_on(
        self, conn: Connection, events: list[Pending], *, force: bool
    ) -> tuple[list[Receipt], Checkpoint | None]:
        self._lock(conn)
        tail = self._current(conn).copy()
        now = max(format_time(self._clock()), tail.time)
        # The serial part of every append, kept to string joins and two SHA-256 calls.
        end = event_json_end(now)
        size, prev, prev_hex = tail.size, tail.hash, tail.hash.hex()
        append_leaf, sha256 = tail.tree.append, hashlib.sha256
        rows, receipts = [], []
        for p in events:
            size += 1
            digest = sha256(b"\x00" + prev + f"{p.head}{size}{p.middle}{end}".encode()).digest()
            digest_hex = digest.hex()
            rows.append((size, now, *p.draft, prev_hex, digest_hex))
            receipts.append(Receipt(size, now, digest_hex))
            append_leaf(digest)
            prev, prev_hex = digest, digest_hex
        tail.size, tail.hash, tail.time = size, prev, now
        if rows:
            self._insert(conn, rows)
        checkpoint = None
        unsigned = tail.size - tail.checkpointed
        if unsigned and (
            force
            or unsigned >= self.checkpoint_every
            or time.monotonic() - self._signed_at >= self.checkpoint_interval
        ):
            checkpoint = self._sign(conn, tail, now)
        conn.commit()
        self._tail = tail
        if checkpoint is not None:
            self._signed_at = time.monotonic()
        return receipts, checkpoint

    def _sign(self, conn: Connection, tail: Tail, now: str) -> Checkpoint:
        checkpoint = self.signing_key.sign(tail.size, tail.tree.root())
        conn.execute(
            insert(CHECKPOINTS).values(
                tree_size=checkpoint.tree_size,
                root=checkpoint.root.hex(),
                time=now,
                key_id=checkpoint.key_id.hex(),
                signature=checkpoint.signature.hex(),
                frontier=json.dumps([n.hex() for n in tail.tree.nodes]),
            )
        )
        tail.checkpointed = tail.size
        return checkpoint

    def _lock(self, conn: Connection) -> None:
        """Start a transaction that excludes other writers, in any process."""
        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})

    def _current(self, conn: Connection) -> Tail:
        """The cached tail, or a fresh one when another writer extended the log meanwhile."""
        tail = self._tail
        newest = tail_row(conn)
        if tail is not None and (
            (newest is None and tail.size == 0)
            or (newest is not None and newest[0] == tail.size and newest[1] == tail.hash.hex())
        ):
            return tail
        self._tail = load_tail(conn)
        self._signed_at = time.monotonic()
        return self._tail
