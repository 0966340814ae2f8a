"""Failed-login limits per source address, so tokens cannot be guessed at speed."""

from __future__ import annotations

import math
import time

from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from fedvault.common.errors import ConfigError, RateLimited

__all__ = ["FailedLoginLimiter"]

_NAMESPACE = "fedvault-auth-failures"


class FailedLoginLimiter:
    """Counts failed logins per source over a moving one-minute window.

    The API calls ``check(source)`` before looking at a token and ``record_failure(source)``
    after a failed one; a source past ``per_minute`` failures is refused until the oldest of
    its failures is a minute old. Counts live in this process's memory.

    Args:
        per_minute: failures a source may have within any minute before being refused.
    """

    def __init__(self, per_minute: int = 10):
        if isinstance(per_minute, bool) or not isinstance(per_minute, int) or per_minute < 1:
            raise ConfigError(
                f"The failed-login limit must be a whole number of at least 1, not {per_minute!r}."
            )
        self.per_minute = per_minute
        self._item = RateLimitItemPerMinute(per_minute, namespace=_NAMESPACE)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    @staticmethod
    def _key(source: str | None) -> str:
        return source or "unknown"

    def check(self, source: str | None) -> None:
        """Refuse a source that used up its failures for the last minute.

        Raises:
            RateLimited: with ``retry_after``, the whole seconds until it may try again.
        """
        key = self._key(source)
        if self._limiter.test(self._item, key):
            return
        reset = self._limiter.get_window_stats(self._item, key).reset_time
        retry_after = max(1, math.ceil(reset - time.time()))
        raise RateLimited(
            f"Too many failed logins from this address; try again in {retry_after} s.",
            retry_after=retry_after,
        )

    def record_failure(self, source: str | None) -> None:
        """Count one failed login from ``source``."""
        self._limiter.hit(self._item, self._key(source))

    def reset(self, source: str | None) -> None:
        """Forget the failures of ``source`` (e.g. after an operator unblocks it)."""
        self._limiter.clear(self._item, self._key(source))
