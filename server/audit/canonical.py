"""RFC 8785 canonical JSON for audit details, and the exact text of an event that is hashed."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

import rfc8785

from fedvault.common.errors import ConfigError

__all__ = [
    "EVENT_COLUMNS",
    "MAX_DETAILS_BYTES",
    "canonical_details",
    "event_json",
    "event_json_end",
    "event_json_parts",
    "format_time",
    "parse_time",
]

MAX_DETAILS_BYTES = 16 * 1024
# The columns of an event that its canonical JSON covers, in ``event_json``'s order.
EVENT_COLUMNS = (
    "seq",
    "time",
    "actor",
    "actor_type",
    "action",
    "resource_type",
    "resource_id",
    "project",
    "outcome",
    "policy",
    "source",
    "request_id",
    "details",
)
_MAX_DEPTH = 16
_MAX_SAFE_INT = 2**53 - 1
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwords",
        "passwd",
        "passphrase",
        "secret",
        "secrets",
        "token",
        "credential",
        "credentials",
        "cookie",
        "authorization",
        "apikey",
        "privatekey",
    }
)
_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
# Without floats and non-ASCII keys, Python's encoder already writes RFC 8785 (tests compare).
_PLAIN = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
# The same encoder built once: JSONEncoder.encode builds it anew on every call, which costs
# more than encoding a small object. No cycle check: _check's depth limit stops cycles.
_C_PLAIN = (
    c_make_encoder(None, _PLAIN.default, encode_basestring, None, ":", ",", True, False, False)
    if c_make_encoder is not None
    else None
)


# ASCII keys that passed ``_check``: a flat details object of these keys takes the fast path.
_CHECKED_KEYS: set[str] = set()
_REMEMBERED_KEYS = 4096


def _plain_number(value: float) -> bool:
    """Whether ``repr(value)`` is already the ECMAScript (RFC 8785) form of ``value``.

    Both write the shortest digits that round-trip; they differ only in when they switch
    to exponents (Python below 1e-4 and from 1e16, ECMAScript below 1e-6 and from 1e21)
    and in integral values, which Python writes with ".0".
    """
    return 1e-4 <= abs(value) < 1e16 and not value.is_integer()


def _flat(details: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """``details`` ready for Python's encoder if it is a dict of already-checked keys and
    scalar values that the encoder then writes exactly as RFC 8785 does, else None.

    Integral floats (which ECMAScript writes without ".0") are passed on as ints.
    """
    if type(details) is not dict:
        return None
    integral: list[str] = []
    for key, value in details.items():
        kind = type(value)
        if key not in _CHECKED_KEYS:
            return None
        if kind is str or kind is bool or value is None:
            continue
        if kind is int:
            if -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT:
                continue
            return None
        if kind is float:
            if _plain_number(value):
                continue
            if value.is_integer() and abs(value) <= _MAX_SAFE_INT:
                integral.append(key)
                continue
        return None
    if integral:
        return details | {key: int(details[key]) for key in integral}
    return details


@lru_cache(maxsize=4096)
def _secret_looking(key: str) -> bool:
    words = [w.lower() for w in _WORDS.findall(key)]
    return bool(words) and (words[-1] == "key" or not _SECRET_WORDS.isdisjoint(words))


def _check(value: Any, path: str, depth: int) -> bool:
    """Raise ConfigError for what an event may not hold; True if RFC 8785 needs the slow path."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return False
    if kind is int or (isinstance(value, int) and not isinstance(value, bool)):
        if not -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT:
            raise ConfigError(
                f"Audit details {path} = {value} is outside JSON's exact integer range "
                "(|n| <= 2**53 - 1); record it as a string."
            )
        return False
    if depth >= _MAX_DEPTH:
        raise ConfigError(f"Audit details nest deeper than {_MAX_DEPTH} levels at {path}.")
    if kind is dict or isinstance(value, Mapping):
        slow = False
        for key, item in value.items():
            if type(key) is not str:
                raise ConfigError(f"Audit details {path} has a non-string key {key!r}.")
            if _secret_looking(key):
                raise ConfigError(
                    f"Audit details {path}.{key} looks like a secret (a password, token, key "
                    "or credential); secrets are never recorded. Record an id or a hash of "
                    "it under another name instead."
                )
            if not key.isascii():
                slow = True
            elif len(_CHECKED_KEYS) < _REMEMBERED_KEYS:
                _CHECKED_KEYS.add(key)
            if type(item) is not str and _check(item, f"{path}.{key}", depth + 1):
                slow = True
        return slow
    if kind is list or kind is tuple or isinstance(value, list | tuple):
        slow = False
        for i, item in enumerate(value):
            if type(item) is not str and _check(item, f"{path}[{i}]", depth + 1):
                slow = True
        return slow
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"Audit details {path} = {value} is not a finite number.")
        return type(value) is not float or not _plain_number(value)
    if isinstance(value, bytes | bytearray | memoryview):
        raise ConfigError(
            f"Audit details {path} holds raw bytes; events never carry model bytes or key "
            "material. Record a hash or an id instead."
        )
    if isinstance(value, str):
        return False
    raise ConfigError(
        f"Audit details {path} is a {type(value).__name__}; only JSON values (objects, "
        "arrays, strings, finite numbers, true, false, null) are recorded."
    )


def canonical_details(details: Mapping[str, Any] | None) -> str:
    """The RFC 8785 canonical JSON of an event's details object.

    Raises:
        ConfigError: ``details`` is not a JSON object, holds bytes, a non-finite number or a
            secret-looking key, or is longer than ``MAX_DETAILS_BYTES`` once encoded.
    """
    if details is None:
        return "{}"
    if not isinstance(details, Mapping):
        raise ConfigError(
            f"Audit details must be a JSON object (a mapping), got {type(details).__name__}."
        )
    plain = _flat(details)
    if plain is None and _check(details, "details", 0):
        # Other floats and non-ASCII keys: number formatting and key order follow ECMAScript.
        text = rfc8785.dumps(details).decode("utf-8")
    else:
        plain = details if plain is None else plain
        text = "".join(_C_PLAIN(plain, 0)) if _C_PLAIN else _PLAIN.encode(plain)
    try:
        size = len(text) if text.isascii() else len(text.encode("utf-8"))
    except UnicodeEncodeError as e:
        raise ConfigError(f"Audit details hold text that is not valid Unicode: {e}") from e
    if size > MAX_DETAILS_BYTES:
        raise ConfigError(
            f"Audit details are {size} bytes once encoded; at most {MAX_DETAILS_BYTES} are "
            "recorded. Record ids and hashes rather than contents."
        )
    return text


def _text(value: str | None) -> str:
    return "null" if value is None else encode_basestring(value)


def event_json_parts(
    actor: str,
    actor_type: str,
    action: str,
    resource_type: str,
    resource_id: str,
    project: str | None,
    outcome: str,
    policy: str | None,
    source: str | None,
    request_id: str | None,
    details: str,
) -> tuple[str, str]:
    """An event's canonical JSON around its sequence number and time: ``(head, middle)``.

    ``event_json`` is ``head + str(seq) + middle + event_json_end(time)``. The writer
    gets these from the caller's thread, so its own serial work per event is a few string
    joins. Arguments are ``EVENT_COLUMNS`` after ``seq`` and ``time``.
    """
    q = encode_basestring
    head = (
        f'{{"action":{q(action)},"actor":{q(actor)},"actor_type":{q(actor_type)},'
        f'"details":{details},"outcome":{q(outcome)},"policy":{_text(policy)},'
        f'"project":{_text(project)},"request_id":{_text(request_id)},'
        f'"resource_id":{q(resource_id)},"resource_type":{q(resource_type)},"seq":'
    )
    return head, f',"source":{_text(source)},"time":'


def event_json(seq: int, time: str, *fields: Any) -> str:
    """The RFC 8785 canonical JSON of one event; ``details`` is already canonical.

    Arguments come in ``EVENT_COLUMNS`` order, so a row from the database can be passed as
    it is. Keys are written in their sorted order by hand, which is what RFC 8785 asks for
    and lets verification rebuild millions of events without a general encoder. Top-level
    strings are escaped, so field boundaries cannot move: the text determines the fields.

    Raises:
        TypeError: a field has the wrong type (only possible for rows edited in the DB).
    """
    if type(seq) is not int:
        raise TypeError(f"seq is {type(seq).__name__}, not an integer")
    head, middle = event_json_parts(*fields)
    return f"{head}{seq}{middle}{event_json_end(time)}"


def event_json_end(time: str) -> str:
    """What follows ``middle`` (see ``event_json_parts``): the time and the closing brace."""
    return f"{encode_basestring(time)}}}"


def format_time(when: datetime) -> str:
    """``when`` as the fixed-width RFC 3339 UTC text events store and hash."""
    if when.tzinfo is None:
        raise ConfigError(f"The time {when} has no timezone; use an aware UTC time.")
    return when.astimezone(UTC).strftime(_TIME_FORMAT)


def parse_time(text: str, *, name: str = "time") -> datetime:
    """An ISO 8601 date or time with a timezone (a bare date means midnight UTC).

    Raises:
        ConfigError: ``text`` is not ISO 8601, or is a time without a timezone.
    """
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"Invalid {name} {text!r}: write an ISO 8601 time such as 2025-01-31T09:30:00Z "
            "or a date such as 2025-01-31."
        ) from None
    if when.tzinfo is None:
        if len(text.strip()) == 10:  # a bare date
            return when.replace(tzinfo=UTC)
        raise ConfigError(
            f"Invalid {name} {text!r}: it has no timezone; add Z for UTC or an offset "
            "such as +02:00."
        )
    return when.astimezone(UTC)
