"""Failed logins per source address: refused with Retry-After once over the limit."""

from __future__ import annotations

import types

import limits.storage.memory
import pytest

import fedvault.server.identity.ratelimit as ratelimit
from fedvault.common.errors import ConfigError, RateLimited
from fedvault.server.identity.ratelimit import FailedLoginLimiter


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    c = _Clock()
    fake = types.SimpleNamespace(time=c.time)
    monkeypatch.setattr(limits.storage.memory, "time", fake)
    monkeypatch.setattr(ratelimit, "time", fake)
    return c


def test_source_is_refused_after_its_failures_and_others_are_not(clock: _Clock) -> None:
    limiter = FailedLoginLimiter(per_minute=3)
    for _ in range(3):
        limiter.check("10.0.0.1")
        limiter.record_failure("10.0.0.1")
    with pytest.raises(RateLimited, match="Too many failed logins") as e:
        limiter.check("10.0.0.1")
    assert 1 <= e.value.retry_after <= 60
    limiter.check("10.0.0.2")  # another address is unaffected


def test_source_may_try_again_once_the_window_has_moved(clock: _Clock) -> None:
    limiter = FailedLoginLimiter(per_minute=2)
    limiter.record_failure("a")
    clock.now += 30
    limiter.record_failure("a")
    with pytest.raises(RateLimited) as e:
        limiter.check("a")
    assert e.value.retry_after == 30  # until the first failure is a minute old
    clock.now += 31
    limiter.check("a")  # one failure left in the window
    limiter.record_failure("a")
    with pytest.raises(RateLimited):
        limiter.check("a")


def test_unknown_source_is_counted_too(clock: _Clock) -> None:
    limiter = FailedLoginLimiter(per_minute=1)
    limiter.record_failure(None)
    with pytest.raises(RateLimited):
        limiter.check(None)


def test_reset_forgets_a_source(clock: _Clock) -> None:
    limiter = FailedLoginLimiter(per_minute=1)
    limiter.record_failure("a")
    limiter.reset("a")
    limiter.check("a")


@pytest.mark.parametrize("bad", [0, -1, 1.5, "10", True])
def test_bad_limit_is_refused(bad: object) -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        FailedLoginLimiter(per_minute=bad)
