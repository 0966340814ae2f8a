"""The API's principal cache: bounded by its time-to-live and by the token's own expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fedvault.server.api._principals import PrincipalCache
from fedvault.server.identity import Principal, PrincipalType

DANA = Principal(type=PrincipalType.USER, id="dana", role="data_scientist", projects=frozenset())
NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _cache(ttl: float, clock: Clock) -> PrincipalCache:
    return PrincipalCache(ttl=ttl, clock=clock, now=lambda: NOW + timedelta(seconds=clock.t - 100))


def test_an_entry_lives_no_longer_than_the_ttl() -> None:
    clock = Clock()
    cache = _cache(2.0, clock)
    cache.put("d", DANA, expires_at=None)
    clock.t += 1.9
    assert cache.get("d") == DANA
    clock.t += 0.2
    assert cache.get("d") is None


def test_an_entry_never_outlives_its_token() -> None:
    clock = Clock()
    cache = _cache(60.0, clock)
    cache.put("d", DANA, expires_at=NOW + timedelta(seconds=1))
    clock.t += 1.0
    assert cache.get("d") is None
    cache.put("gone", DANA, expires_at=NOW)  # already expired: not kept at all
    assert cache.get("gone") is None


def test_clear_and_a_zero_ttl_forget_everything() -> None:
    clock = Clock()
    cache = _cache(2.0, clock)
    cache.put("d", DANA, expires_at=None)
    cache.clear()
    assert cache.get("d") is None
    off = _cache(0.0, clock)
    off.put("d", DANA, expires_at=None)
    assert off.get("d") is None


def test_the_oldest_entries_go_first_when_full() -> None:
    clock = Clock()
    cache = PrincipalCache(ttl=5.0, size=2, clock=clock)
    for digest in ("a", "b", "c"):
        cache.put(digest, DANA, expires_at=None)
    assert cache.get("a") is None and cache.get("c") == DANA
