"""Rehash an intact stretch of a SQLite log straight through the sqlite3 driver.

The fast path of verification, with the same checks as ``_scan.scan``: a cursor that
streams rows instead of fetching pages through SQLAlchemy, the canonical JSON written
inline, and the Merkle range built level by level. It only ever confirms a stretch: at the
first thing that is not as it should be it gives up, and ``scan`` rehashes the stretch to
name what is wrong.
"""

from __future__ import annotations

import hashlib
import sqlite3
from json.encoder import encode_basestring
from typing import TYPE_CHECKING
from urllib.parse import quote

from sqlalchemy.engine import URL

from fedvault.server.audit._chain import EVENTS
from fedvault.server.audit.canonical import EVENT_COLUMNS
from fedvault.server.audit.merkle import prefix_ranges

if TYPE_CHECKING:
    from fedvault.server.audit._scan import Scan

__all__ = ["scan_sqlite", "sqlite_file"]

_SELECT = f"SELECT {', '.join((*EVENT_COLUMNS, 'prev_hash', 'hash'))} FROM {EVENTS.name}"  # noqa: S608


def sqlite_file(url: URL) -> str | None:
    """The path of the SQLite file ``url`` names plainly, else None."""
    if url.get_backend_name() != "sqlite" or url.query or url.database in (None, "", ":memory:"):
        return None
    return url.database


def scan_sqlite(path: str, result: Scan, *, end: int | None, boundaries: frozenset[int]) -> bool:
    """Rehash events ``result.start + 1`` to ``end`` (or the newest) of the file ``path``.

    Returns:
        True with ``result`` filled in as ``scan`` would for an intact stretch; False when
        an event is missing, altered, out of place or unreadable, or the file cannot be
        read this way (``result`` is then to be discarded).
    """
    start = result.start
    # From start 0, the lowest seq whatever it is: an intruder may have inserted one below 1.
    bounds = [f"seq > {int(start)}"] if start else []
    if end is not None:
        bounds.append(f"seq <= {int(end)}")
    where = f" WHERE {' AND '.join(bounds)}" if bounds else ""
    q, sha256 = encode_basestring, hashlib.sha256
    digests: list[bytes] = []
    keep = digests.append
    expected, prev, prev_hex, last_time = start + 1, b"", "", ""
    try:
        conn = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True)
    except sqlite3.Error:
        return False
    try:
        rows = conn.execute(f"{_SELECT}{where} ORDER BY seq")
        for (
            seq, time, actor, actor_type, action, resource_type, resource_id,
            project, outcome, policy, source, request_id, details, prev_hash, stored,
        ) in rows:  # fmt: skip
            if seq != expected:
                return False
            if not digests:  # the first event: its link is checked by the caller
                result.first_prev, result.first_time = prev_hash, time
                prev, prev_hex, last_time = bytes.fromhex(prev_hash), prev_hash, time
            # event_json, inline: keys sorted, top-level strings escaped, details verbatim.
            body = (
                f'{{"action":{q(action)},"actor":{q(actor)},"actor_type":{q(actor_type)},'
                f'"details":{details},"outcome":{q(outcome)},'
                f'"policy":{"null" if policy is None else q(policy)},'
                f'"project":{"null" if project is None else q(project)},'
                f'"request_id":{"null" if request_id is None else q(request_id)},'
                f'"resource_id":{q(resource_id)},"resource_type":{q(resource_type)},'
                f'"seq":{seq},"source":{"null" if source is None else q(source)},'
                f'"time":{q(time)}}}'
            )
            digest = sha256(b"\x00" + prev + body.encode()).digest()
            if prev_hash != prev_hex or digest.hex() != stored or time < last_time:
                return False
            keep(digest)
            prev, prev_hex, last_time = digest, stored, time
            expected += 1
    except (sqlite3.Error, TypeError, ValueError, UnicodeError):
        return False
    finally:
        conn.close()
    if end is not None and expected <= end:
        return False
    inside = {b: b - start for b in boundaries if start < b < expected}
    ranges = prefix_ranges(digests, {len(digests), *inside.values()})
    result.tree = ranges[len(digests)]
    result.trees = {b: ranges[size] for b, size in inside.items()}
    result.last_hash, result.last_time = prev, last_time
    return True
