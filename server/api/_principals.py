"""A short-lived cache of who holds which token, so a request needs no lookup to authenticate."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime

from fedvault.server.identity import Principal

__all__ = ["PrincipalCache"]


class PrincipalCache:
    """Principals by token digest, each kept ``ttl`` seconds at most and never past the
    token's expiry.

    The API clears it after every request that changes something (a revoked token, a
    disabled user or a new membership take effect at once); changes made outside this
    process take effect within ``ttl``. ``ttl == 0`` turns the cache off.
    """

    def __init__(
        self,
        *,
        ttl: float,
        size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.ttl, self.size = ttl, size
        self._clock, self._now = clock, now
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: str) -> Principal | None:
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if entry[0] <= self._clock():
                del self._entries[digest]
                return None
            return entry[1]

    def put(self, digest: str, principal: Principal, *, expires_at: datetime | None) -> None:
        if self.ttl <= 0:
            return
        keep = self.ttl
        if expires_at is not None:
            keep = min(keep, (expires_at - self._now()).total_seconds())
        if keep <= 0:
            return
        with self._lock:
            self._entries[digest] = (self._clock() + keep, principal)
            self._entries.move_to_end(digest)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
