"""What one audit event holds, checked before it is queued: the fields and their rules."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from fedvault.common.errors import ConfigError
from fedvault.server.audit.canonical import canonical_details
from fedvault.server.audit.tables import Outcome

__all__ = ["EventDraft", "Receipt", "draft_event", "parse_outcome"]

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_ACTION = re.compile(r"[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*")
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]+")


class EventDraft(NamedTuple):
    """An event checked and canonicalized, waiting for its sequence number and time.

    Fields follow ``EVENT_COLUMNS`` after ``seq`` and ``time``, so a row is
    ``(seq, time, *draft)``.
    """

    actor: str
    actor_type: str
    action: str
    resource_type: str
    resource_id: str
    project: str | None
    outcome: str
    policy: str | None
    source: str | None
    request_id: str | None
    details: str


class Receipt(NamedTuple):
    """Proof that an event is committed: its place in the log and its hash."""

    seq: int
    time: str
    hash: str


def parse_outcome(value: str | Outcome) -> Outcome:
    try:
        return Outcome(value)
    except ValueError:
        allowed = ", ".join(o.value for o in Outcome)
        raise ConfigError(f"Invalid outcome {value!r}: use one of {allowed}.") from None


_OUTCOMES = frozenset(o.value for o in Outcome)
_LOWER = "use lowercase letters, digits, '-' or '_', starting with a letter"


_REMEMBERED = 65536  # accepted values a rule keeps, per rule, before it starts afresh


class _Rule:
    """What one field may hold, and the message when it does not."""

    __slots__ = ("accepted", "limit", "name", "pattern", "rule")

    def __init__(self, name: str, pattern: re.Pattern[str], limit: int, rule: str):
        self.name, self.pattern, self.limit, self.rule = name, pattern, limit, rule
        # Values already checked. Actors, actions, projects and sources repeat from event
        # to event, and a set lookup costs a fraction of a pattern match.
        self.accepted: set[str] = set()

    def check(self, value: Any) -> Any:
        if type(value) is str and len(value) <= self.limit and self.pattern.fullmatch(value):
            return value
        raise ConfigError(f"Invalid audit {self.name} {value!r}: {self.rule}")

    def check_often_seen(self, value: Any) -> Any:
        """``check`` for fields with few distinct values (actors, actions), remembered."""
        if type(value) is str and value in self.accepted:
            return value
        self.check(value)
        if len(self.accepted) >= _REMEMBERED:
            self.accepted.clear()
        self.accepted.add(value)
        return value

    def check_optional(self, value: Any) -> Any:
        return None if value is None else self.check_often_seen(value)


def _printable(name: str, limit: int) -> _Rule:
    rule = f"use 1-{limit} characters without control characters."
    return _Rule(name, _PRINTABLE, limit, rule)


_ACTOR = _printable("actor", 256)
_ACTOR_TYPE = _Rule("actor type", _NAME, 32, f"{_LOWER} (at most 32).")
_ACTION_NAME = _Rule(
    "action", _ACTION, 64, f"dot-separated words ({_LOWER}), e.g. model.pull (at most 64)."
)
_RESOURCE_TYPE = _Rule("resource type", _NAME, 32, f"{_LOWER} (at most 32).")
_RESOURCE_ID = _printable("resource id", 256)
_PROJECT = _printable("project", 128)
_POLICY = _printable("policy", 256)
_SOURCE = _printable("source", 128)
_REQUEST_ID = _printable("request id", 128)


def draft_event(
    *,
    actor: str,
    actor_type: str,
    action: str,
    resource_type: str,
    resource_id: str,
    outcome: str | Outcome,
    project: str | None = None,
    policy: str | None = None,
    source: str | None = None,
    request_id: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> EventDraft:
    """Check an event's fields and canonicalize its details.

    Raises:
        ConfigError: a field breaks its rule (the message names it), or ``details`` holds a
            secret-looking key, bytes or something that is not JSON.
    """
    return EventDraft(
        _ACTOR.check_often_seen(actor),
        _ACTOR_TYPE.check_often_seen(actor_type),
        _ACTION_NAME.check_often_seen(action),
        _RESOURCE_TYPE.check_often_seen(resource_type),
        _RESOURCE_ID.check(resource_id),
        _PROJECT.check_optional(project),
        str(outcome)
        if isinstance(outcome, str) and outcome in _OUTCOMES
        else parse_outcome(outcome).value,
        _POLICY.check_optional(policy),
        _SOURCE.check_optional(source),
        None if request_id is None else _REQUEST_ID.check(request_id),
        canonical_details(details),
    )
