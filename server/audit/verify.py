"""Verify the whole log: every event's hash, the chain, every checkpoint's root and signature."""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from fedvault.common.errors import ConfigError
from fedvault.server.audit._chain import CHECKPOINTS, EVENTS, GENESIS
from fedvault.server.audit._scan import NOT_FOLLOWING, Scan, iter_rows, rehash, scan, scan_url
from fedvault.server.audit.merkle import EMPTY_ROOT, CompactRange
from fedvault.server.audit.signing import Checkpoint, PublicKey

__all__ = ["STRETCH", "VerifyReport", "iter_rows", "verify_log"]

STRETCH = 1 << 17  # events one worker rehashes at a time
log = logging.getLogger("fedvault.server.audit")

_POOL: tuple[int, ProcessPoolExecutor] | None = None
_POOL_LOCK = threading.Lock()


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


def _stretches(engine: Engine, stretch: int) -> list[tuple[int, int | None]]:
    """``(start, end)`` of each stretch; the last is open-ended, so it also meets any event
    numbered past the others (an insertion) or appended meanwhile."""
    with engine.connect() as conn:
        events = conn.execute(select(func.count()).select_from(EVENTS)).scalar_one()
    starts = range(0, max(events, 1), stretch)
    return [(s, s + stretch) for s in starts[:-1]] + [(starts[-1], None)]


def _pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes, kept for the next verification (an API server verifies often).

    A process with no other thread (the CLI) forks them: they start at once, with every
    module already imported. A threaded one (a server) spawns them, since forking copies
    locks that its other threads may hold.
    """
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != workers or getattr(_POOL[1], "_broken", False):
            if _POOL is not None:
                _POOL[1].shutdown(wait=False, cancel_futures=True)
            forks = "fork" in multiprocessing.get_all_start_methods()
            alone = forks and threading.active_count() == 1
            context = multiprocessing.get_context("fork" if alone else "spawn")
            _POOL = (workers, ProcessPoolExecutor(workers, mp_context=context))
        return _POOL[1]


def _scans(
    engine: Engine, boundaries: frozenset[int], *, workers: int | None, stretch: int
) -> Iterator[Scan]:
    """Each stretch's scan, in order; in worker processes when there are several."""
    parts = _stretches(engine, stretch)
    workers = min(workers or os.cpu_count() or 1, len(parts))
    url = engine.url
    if workers == 1 or (
        url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")
    ):
        for start, end in parts:
            yield rehash(engine, start=start, end=end, boundaries=boundaries)
        return
    pool = _pool(workers)
    text = url.render_as_string(hide_password=False)
    futures = [pool.submit(scan_url, text, start, end, boundaries) for start, end in parts]
    try:
        for (start, end), future in zip(parts, futures, strict=True):
            try:
                yield future.result()
            except BrokenProcessPool:  # a worker was killed (out of memory, say)
                log.warning("A verification worker died; rehashing from event %d here", start)
                yield rehash(engine, start=start, end=end, boundaries=boundaries)
    finally:
        for future in futures:
            future.cancel()


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
    engine: Engine,
    public_key: PublicKey,
    *,
    trusted: Checkpoint | None = None,
    workers: int | None = None,
    stretch: int = STRETCH,
) -> VerifyReport:
    """Recompute every event's hash and the chain, and check every checkpoint.

    Works on any copy of the database with only the public key: nothing is written. A
    log of at least two stretches is rehashed by several processes at once, each on its
    own stretch; the report is the same as rehashing it in one pass.

    Args:
        engine: the database holding the log.
        public_key: the key checkpoints must be signed with (exported beforehand).
        trusted: a checkpoint saved outside the database earlier; the log must still
            contain it, which detects truncation even if newer checkpoints were deleted.
        workers: processes rehashing at once; default one per CPU, 1 for one pass here.
        stretch: events per unit of work, a power of two.

    Raises:
        ConfigError: ``workers`` or ``stretch`` is out of range.
    """
    if stretch < 1 or stretch & (stretch - 1):
        raise ConfigError(f"stretch must be a power of two, got {stretch}.")
    if workers is not None and workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}.")
    by_size = _load_checkpoints(engine, public_key, trusted)
    count = sum(len(v) for v in by_size.values())
    boundaries = iter(sorted(by_size))
    boundary = next(boundaries, None)
    tree = CompactRange()
    signed_size, prev_hex, last_time = 0, GENESIS.hex(), ""

    def fail(
        problem: str, *, events: int, event: int | None = None, cp: int | None = None
    ) -> VerifyReport:
        return VerifyReport(events, count, signed_size, event, cp, problem)

    if boundary == 0:
        if problem := _check_signed(by_size[0], public_key, EMPTY_ROOT):
            return fail(problem, events=0, cp=0)
        boundary = next(boundaries, None)
    wanted = frozenset(b for b in by_size if b > 0)
    for part in _scans(engine, wanted, workers=workers, stretch=stretch):
        if not part.joined and part.events > stretch:  # appended to while it was scanned
            part = scan(engine, start=part.start, end=None, boundaries=wanted, before=tree)
        first = part.start + 1
        if part.first_prev is not None and part.first_prev != prev_hex:
            return fail(f"event {first} {NOT_FOLLOWING}", events=tree.size, event=first)
        if part.bad_event == first and part.problem:
            return fail(part.problem, events=tree.size, event=first)
        if part.events and part.first_time < last_time:
            what = f"event {first} is dated before the event preceding it"
            return fail(what, events=tree.size, event=first)
        while boundary is not None and boundary <= part.start + part.events:
            upto = part.trees[boundary]
            root = (upto if part.joined else tree.extend(upto)).root()
            if problem := _check_signed(by_size[boundary], public_key, root):
                return fail(
                    f"{problem} (between events {signed_size + 1} and {boundary})",
                    events=boundary,
                    cp=boundary,
                )
            signed_size, boundary = boundary, next(boundaries, None)
        if part.problem:
            return fail(part.problem, events=part.start + part.events, event=part.bad_event)
        tree = part.tree if part.joined else tree.extend(part.tree)
        if part.events:
            prev_hex, last_time = part.last_hash.hex(), part.last_time
    if boundary is not None:
        label = by_size[boundary][0].label
        return fail(
            f"{label} covers {boundary} events but the log holds only {tree.size}: the "
            f"newest events from {tree.size + 1} on were removed",
            events=tree.size,
            event=tree.size + 1,
            cp=boundary,
        )
    return VerifyReport(tree.size, count, signed_size)
