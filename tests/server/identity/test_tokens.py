"""The API token format, its checksum, and the digests the database keeps."""

from __future__ import annotations

import secrets

import pytest

from fedvault.server.identity.tokens import (
    TOKEN_LENGTH,
    new_token,
    token_digest,
    token_display_prefix,
    verify_digest,
    well_formed,
)


def test_new_tokens_have_the_scannable_prefix_and_pass_their_own_checksum() -> None:
    tokens = {new_token() for _ in range(200)}
    assert len(tokens) == 200
    for token in tokens:
        assert token.startswith("fvt_")
        assert len(token) == TOKEN_LENGTH == 42
        assert token[4:].isalnum() and token.isascii()
        assert well_formed(token)


def test_a_single_typo_is_caught_by_the_checksum() -> None:
    token = new_token()
    for i in range(4, len(token)):
        replacement = "a" if token[i] != "a" else "b"
        assert not well_formed(token[:i] + replacement + token[i + 1 :]), i


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "fvt_",
        "ghp_" + "a" * 38,
        "FVT_" + "a" * 38,
        "fvt_" + "a" * 37,
        "fvt_" + "a" * 39,
        "fvt_" + "a" * 31 + "-" + "abcdef",
        "fvt_" + "é" * 38,
        None,
        12345,
    ],
)
def test_malformed_tokens_are_refused_before_any_lookup(bad: object) -> None:
    assert not well_formed(bad)


def test_a_truncated_paste_is_refused() -> None:
    assert not well_formed(new_token()[:-1])
    assert not well_formed(new_token() + "x")


def test_digest_is_keyed_by_the_pepper_and_never_the_token() -> None:
    token = new_token()
    pepper = secrets.token_bytes(32)
    digest = token_digest(token, pepper)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert token not in digest and token[4:] not in digest
    assert digest == token_digest(token, pepper)
    assert digest != token_digest(token, secrets.token_bytes(32))
    assert verify_digest(token, digest, pepper)
    assert not verify_digest(new_token(), digest, pepper)


def test_display_prefix_reveals_only_a_few_characters() -> None:
    token = new_token()
    prefix = token_display_prefix(token)
    assert token.startswith(prefix)
    assert len(prefix) == 8
