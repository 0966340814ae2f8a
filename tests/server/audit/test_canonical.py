"""Events hash RFC 8785 canonical JSON (checked against the rfc8785 package) and never hold
secrets, bytes or non-JSON values."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from fedvault.common.errors import ConfigError
from fedvault.server.audit.canonical import (
    EVENT_COLUMNS,
    MAX_DETAILS_BYTES,
    canonical_details,
    event_json,
    format_time,
    parse_time,
)

SAMPLES: list[dict[str, Any]] = [
    {},
    {"b": 1, "a": [True, False, None], "c": {"z": "", "y": -0}},
    {"epsilon": 1.5, "delta": 1e-05, "big": 1e21, "small": 1e-7, "round": 3.0},
    {'quote"back\\slash': "tab\tnew\nline\u0001\u001f\u007f", "é": "ü€𝄞"},
    {"\U0001f600": 1, "\ufb33": 2, "a": 3},  # UTF-16 order differs from code point order
    {"nested": [{"x": [1, 2.25, "3"]}, [], {}], "max": 2**53 - 1, "min": -(2**53 - 1)},
]


@pytest.mark.parametrize("details", SAMPLES)
def test_details_are_rfc8785_canonical(details: dict[str, Any]) -> None:
    assert canonical_details(details) == rfc8785.dumps(details).decode()


@pytest.mark.parametrize("details", SAMPLES)
def test_an_event_is_rfc8785_canonical_json_of_all_its_fields(details: dict[str, Any]) -> None:
    fields = {
        "seq": 42,
        "time": "2025-03-01T09:00:00.000000Z",
        "actor": 'DOMAIN\\o"brien',
        "actor_type": "user",
        "action": "model.pull",
        "resource_type": "model",
        "resource_id": "digits-cnn:3",
        "project": None,
        "outcome": "allowed",
        "policy": "policies/v2",
        "source": None,
        "request_id": "r-1",
    }
    text = event_json(*(fields[c] for c in EVENT_COLUMNS[:-1]), canonical_details(details))
    assert text == rfc8785.dumps(fields | {"details": details}).decode()
    assert json.loads(text)["details"] == details


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "token",
        "access_token",
        "refreshToken",
        "api_key",
        "apiKey",
        "X-API-Key",
        "private_key",
        "secret",
        "client_secret",
        "Authorization",
        "session-cookie",
        "credentials",
        "key",
    ],
)
def test_secret_looking_keys_are_refused(key: str) -> None:
    with pytest.raises(ConfigError, match="looks like a secret"):
        canonical_details({"outer": {key: "x"}})


@pytest.mark.parametrize("key", ["key_id", "kek_version", "num_tokens", "monkey", "keys", "sha256"])
def test_ordinary_keys_are_kept(key: str) -> None:
    assert key in canonical_details({key: 1})


@pytest.mark.parametrize(
    ("details", "message"),
    [
        ({"weights": b"\x00\x01"}, "raw bytes"),
        ({"x": float("nan")}, "not a finite number"),
        ({"x": float("inf")}, "not a finite number"),
        ({"x": 2**53}, "exact integer range"),
        ({1: "x"}, "non-string key"),
        ({"x": {1, 2}}, "only JSON values"),
        ({"x": object()}, "only JSON values"),
        ({"x": "\ud800"}, "not valid Unicode"),
        ({"x": "a" * MAX_DETAILS_BYTES}, "at most"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_what_cannot_be_recorded_is_a_clear_error(details: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        canonical_details(details)


def test_deeply_nested_details_are_refused() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(40):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(ConfigError, match="nest deeper"):
        canonical_details(deep)


def test_times_are_fixed_width_utc_and_parse_back() -> None:
    when = datetime(2025, 3, 1, 10, 30, 5, 12, tzinfo=timezone(timedelta(hours=1)))
    assert format_time(when) == "2025-03-01T09:30:05.000012Z"
    assert parse_time("2025-03-01T09:30:05.000012Z") == when
    assert parse_time("2025-03-01") == datetime(2025, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "message"),
    [("yesterday", "ISO 8601"), ("2025-03-01T09:00:00", "no timezone"), ("", "ISO 8601")],
)
def test_bad_times_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_time(text, name="since")


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53 - 1), max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
_KEYS = st.text(alphabet="abcdefgxyz_ÅéÜ", min_size=1, max_size=6).filter(
    lambda k: "key" not in k.lower()
)


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(
        _KEYS,
        st.recursive(
            _SCALARS,
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3),
            max_leaves=6,
        ),
        max_size=5,
    )
)
def test_any_json_details_encode_as_rfc8785(details: dict[str, Any]) -> None:
    """Numbers of every magnitude, nesting and non-ASCII keys, twice (the second call
    meets keys already checked, which takes the fast path)."""
    expected = rfc8785.dumps(details).decode()
    assert canonical_details(details) == expected
    assert canonical_details(details) == expected
