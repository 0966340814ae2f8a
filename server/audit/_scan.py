"""Rehash one stretch of the log: the work that verification splits across processes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine, make_url

from fedvault.server.audit._chain import EVENTS
from fedvault.server.audit._scan_sqlite import scan_sqlite, sqlite_file
from fedvault.server.audit.canonical import EVENT_COLUMNS, event_json
from fedvault.server.audit.merkle import CompactRange

__all__ = ["NOT_FOLLOWING", "Scan", "iter_rows", "rehash", "scan", "scan_url"]

_CHUNK = 20_000
NOT_FOLLOWING = "does not follow the event before it (reordered, inserted or removed)"
_ROW = (*EVENT_COLUMNS, "prev_hash", "hash")


def iter_rows(
    engine: Engine, columns: tuple[str, ...], *, after: int | None = None, upto: int | None = None
) -> Iterator[Any]:
    """Rows of ``columns`` (the first being ``seq``) with ``after < seq <= upto``, in
    sequence order, fetched in chunks. No ``after``: from the lowest ``seq``, whatever
    it is (an intruder may have inserted one below 1)."""
    mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
    head = f"SELECT {', '.join(columns)} FROM {EVENTS.name} WHERE seq > {mark}"  # noqa: S608
    bound = f" AND seq <= {int(upto)}" if upto is not None else ""
    sql = f"{head}{bound} ORDER BY seq LIMIT {_CHUNK}"
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if after is None:
            cursor.execute(sql.replace(f"seq > {mark}", "1 = 1"))
        else:
            cursor.execute(sql, (int(after),))
        while rows := cursor.fetchall():
            yield from rows
            if len(rows) < _CHUNK:
                break
            cursor.execute(sql, (rows[-1][0],))
        cursor.close()
    finally:
        raw.close()


@dataclass
class Scan:
    """What one stretch ``(start, end]`` of the log holds, as far as it is intact.

    ``trees`` are the Merkle ranges at each requested boundary: over the stretch's own
    leaves, which the caller joins to the range before the stretch, or over the whole log
    when the scan was given that range (``joined``). ``problem`` names
    the first event that is wrong inside the stretch; the links to the stretch before
    (``first_prev`` and ``first_time``) are for the caller to check.
    """

    start: int
    tree: CompactRange
    joined: bool = False
    first_prev: str | None = None
    first_time: str = ""
    last_hash: bytes = b""
    last_time: str = ""
    trees: dict[int, CompactRange] = field(default_factory=dict)
    bad_event: int | None = None
    problem: str | None = None

    @property
    def events(self) -> int:
        """Events checked and found intact, from ``start + 1`` on."""
        return self.tree.size - (self.start if self.joined else 0)


def scan(
    engine: Engine,
    *,
    start: int,
    end: int | None,
    boundaries: frozenset[int] = frozenset(),
    before: CompactRange | None = None,
) -> Scan:
    """Recompute the hashes of events ``start + 1`` to ``end`` (or the newest).

    Each event's hash is computed from its own stored ``prev_hash``, and each stored
    ``prev_hash`` must be the hash before it, so a stretch checks on its own; only its
    first link points outside it. ``before`` is the Merkle range over events 1 to
    ``start``, when the caller has it.
    """
    if before is not None and before.size != start:
        raise ValueError(f"The range before event {start + 1} must cover {start} events.")
    result = Scan(start, CompactRange() if before is None else before.copy(), before is not None)
    tree, trees = result.tree, result.trees
    sha256, expected, prev, last_time = hashlib.sha256, start + 1, b"", ""
    prev_hex: str | None = None

    def fail(seq: int, problem: str) -> Scan:
        result.bad_event, result.problem = seq, problem
        return result

    for row in iter_rows(engine, _ROW, after=start or None, upto=end):
        seq = row[0]
        if seq != expected:
            if isinstance(seq, int) and seq > expected:
                return fail(
                    expected,
                    f"event {expected} is missing: deleted, or the events after it renumbered",
                )
            return fail(expected, f"an event numbered {seq!r} was inserted before event {expected}")
        if prev_hex is None:  # the first event: its link is checked by the caller
            result.first_prev, result.first_time = row[13], row[1]
            try:
                prev = bytes.fromhex(row[13])
            except (TypeError, ValueError):
                return fail(seq, f"event {seq} {NOT_FOLLOWING}")
            prev_hex, last_time = row[13], row[1]
        try:
            digest = sha256(b"\x00" + prev + event_json(*row[:13]).encode()).digest()
        except (TypeError, UnicodeEncodeError):
            digest = b""
        if digest.hex() != row[14] or row[13] != prev_hex:
            reason = (
                NOT_FOLLOWING if row[13] != prev_hex else "does not match its hash: it was altered"
            )
            return fail(seq, f"event {seq} {reason}")
        if row[1] < last_time:
            return fail(seq, f"event {seq} is dated before the event preceding it")
        tree.append(digest)
        prev, prev_hex, last_time = digest, row[14], row[1]
        if seq in boundaries:
            trees[seq] = tree.copy()
        expected += 1
    if end is not None and expected <= end:
        return fail(expected, f"event {expected} is missing: deleted, or the log cut short")
    result.last_hash, result.last_time = prev, last_time
    return result


def _fast(path: str | None, start: int, end: int | None, boundaries: frozenset[int]) -> Scan | None:
    if path is None:
        return None
    result = Scan(start, CompactRange())
    return result if scan_sqlite(path, result, end=end, boundaries=boundaries) else None


def rehash(engine: Engine, *, start: int, end: int | None, boundaries: frozenset[int]) -> Scan:
    """``scan``, confirmed on SQLite's fast path where it holds (see ``_scan_sqlite``)."""
    fast = _fast(sqlite_file(engine.url), start, end, boundaries)
    return fast or scan(engine, start=start, end=end, boundaries=boundaries)


def scan_url(url: str, start: int, end: int | None, boundaries: frozenset[int]) -> Scan:
    """``rehash`` in a worker process, on its own connection to the database at ``url``."""
    if fast := _fast(sqlite_file(make_url(url)), start, end, boundaries):
        return fast
    from fedvault.server.core.db import open_database

    engine = open_database(url, migrate=False)
    try:
        return scan(engine, start=start, end=end, boundaries=boundaries)
    finally:
        engine.dispose()
