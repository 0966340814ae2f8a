"""API tokens: issued once, stored as digests only, and refused alike for every failure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlmodel import Session

from fedvault.common.errors import AuthenticationFailed, ConfigError, NotFound
from fedvault.server.identity import Principal, service
from fedvault.server.identity.tables import PrincipalType
from fedvault.server.identity.tokens import new_token

MESSAGE = "Invalid or expired API token. Ask an admin for a new token."


def _refused(session: Session, token: str, pepper: bytes, **kw: object) -> str:
    with pytest.raises(AuthenticationFailed) as e:
        service.authenticate(session, token=token, pepper=pepper, **kw)
    return str(e.value)


@pytest.fixture
def alice(session: Session) -> str:
    service.create_user(session, user_id="root", role="admin", created_by="x")
    service.create_user(session, user_id="alice", role="data_scientist", created_by="root")
    for project in ("cancer", "cardio"):
        service.create_project(session, project_id=project, created_by="root")
        service.add_member(session, project_id=project, user_id="alice", by="root")
    return "alice"


def test_user_token_identifies_the_user_and_their_projects(
    session: Session, pepper: bytes, alice: str
) -> None:
    token, row = service.issue_token(
        session, pepper=pepper, principal_type="user", principal_id=alice, created_by="root"
    )
    principal = service.authenticate(session, token=token, pepper=pepper)
    assert principal == Principal(
        type=PrincipalType.USER,
        id="alice",
        role="data_scientist",
        projects=frozenset({"cancer", "cardio"}),
        site_id=None,
        token_id=row.id,
    )
    assert not principal.is_admin and principal.is_user


def test_stored_row_has_no_plaintext(session: Session, pepper: bytes, alice: str) -> None:
    token, row = service.issue_token(
        session, pepper=pepper, principal_type="user", principal_id=alice, created_by="root"
    )
    assert row.digest != token and token[4:] not in row.digest
    assert token.startswith(row.prefix) and len(row.prefix) < 12
    dump = session.connection().execute(text("SELECT * FROM api_tokens")).all()
    assert token[8:] not in repr(dump)


def test_token_from_another_pepper_is_refused(session: Session, pepper: bytes, alice: str) -> None:
    token, _ = service.issue_token(
        session, pepper=pepper, principal_type="user", principal_id=alice, created_by="root"
    )
    assert _refused(session, token, b"\x00" * 32) == MESSAGE


def test_expired_token_is_refused(session: Session, pepper: bytes, alice: str) -> None:
    token, row = service.issue_token(
        session,
        pepper=pepper,
        principal_type="user",
        principal_id=alice,
        created_by="root",
        expires_in=timedelta(hours=1),
    )
    assert row.expires_at is not None
    service.authenticate(session, token=token, pepper=pepper)
    later = datetime.now(UTC) + timedelta(hours=1, seconds=1)
    assert _refused(session, token, pepper, now=later) == MESSAGE


def test_revoked_token_is_refused_at_once(session: Session, pepper: bytes, alice: str) -> None:
    token, row = service.issue_token(
        session, pepper=pepper, principal_type="user", principal_id=alice, created_by="root"
    )
    service.authenticate(session, token=token, pepper=pepper)
    revoked = service.revoke_token(session, token_id=row.id, by="root")
    assert revoked.revoked_at is not None
    assert service.revoke_token(session, token_id=row.id, by="root").revoked_at == (
        revoked.revoked_at
    )
    assert _refused(session, token, pepper) == MESSAGE


def test_disabled_user_is_refused_and_enabled_again(
    session: Session, pepper: bytes, alice: str
) -> None:
    token, _ = service.issue_token(
        session, pepper=pepper, principal_type="user", principal_id=alice, created_by="root"
    )
    service.set_disabled(session, user_id=alice, disabled=True, by="root")
    assert _refused(session, token, pepper) == MESSAGE
    with pytest.raises(ConfigError, match="disabled"):
        service.issue_token(
            session, pepper=pepper, principal_type="user", principal_id=alice, created_by="root"
        )
    service.set_disabled(session, user_id=alice, disabled=False, by="root")
    assert service.authenticate(session, token=token, pepper=pepper).id == alice


def test_site_token_and_revoked_site(session: Session, pepper: bytes, node_key: str) -> None:
    service.add_site(session, site_id="site-a", public_key=node_key, created_by="root")
    token, row = service.issue_token(
        session, pepper=pepper, principal_type="site", principal_id="site-a", created_by="root"
    )
    principal = service.authenticate(session, token=token, pepper=pepper)
    assert (principal.type, principal.id, principal.role, principal.site_id) == (
        PrincipalType.SITE,
        "site-a",
        None,
        "site-a",
    )
    assert principal.projects == frozenset() and principal.is_site
    service.revoke_site(session, site_id="site-a", by="root")
    assert _refused(session, token, pepper) == MESSAGE
    assert service.get_token(session, row.id).revoked_at is not None  # its tokens went too
    with pytest.raises(ConfigError, match="revoked"):
        service.issue_token(
            session, pepper=pepper, principal_type="site", principal_id="site-a", created_by="r"
        )


def test_site_operator_principal_names_their_site(
    session: Session, pepper: bytes, node_key: str
) -> None:
    service.add_site(session, site_id="site-a", public_key=node_key, created_by="root")
    service.create_user(
        session, user_id="op", role="site_operator", created_by="root", site_id="site-a"
    )
    token, _ = service.issue_token(
        session, pepper=pepper, principal_type="user", principal_id="op", created_by="root"
    )
    principal = service.authenticate(session, token=token, pepper=pepper)
    assert (principal.role, principal.site_id) == ("site_operator", "site-a")


@pytest.mark.parametrize(
    "bad", ["", "Bearer x", "fvt_", "fvt_" + "a" * 38, "x" * 10_000, "fvt_\x00" + "a" * 37]
)
def test_malformed_tokens_get_the_same_message(session: Session, pepper: bytes, bad: str) -> None:
    assert _refused(session, bad, pepper) == MESSAGE


def test_unknown_well_formed_token_gets_the_same_message(session: Session, pepper: bytes) -> None:
    assert _refused(session, new_token(), pepper) == MESSAGE


def test_last_used_is_written_at_most_once_a_minute(
    session: Session, pepper: bytes, alice: str
) -> None:
    token, row = service.issue_token(
        session, pepper=pepper, principal_type="user", principal_id=alice, created_by="root"
    )
    assert row.last_used_at is None
    t0 = datetime.now(UTC)

    def last_used() -> datetime:
        session.expire_all()
        used: datetime | None = service.get_token(session, row.id).last_used_at
        assert used is not None
        return used.replace(tzinfo=UTC) if used.tzinfo is None else used

    service.authenticate(session, token=token, pepper=pepper, now=t0)
    assert last_used() == t0
    service.authenticate(session, token=token, pepper=pepper, now=t0 + timedelta(seconds=30))
    assert last_used() == t0
    service.authenticate(session, token=token, pepper=pepper, now=t0 + timedelta(seconds=61))
    assert last_used() == t0 + timedelta(seconds=61)


def test_issue_token_bad_input(session: Session, pepper: bytes, alice: str) -> None:
    def issue(**kw: object) -> None:
        args: dict[str, object] = {
            "pepper": pepper,
            "principal_type": "user",
            "principal_id": alice,
            "created_by": "root",
        }
        service.issue_token(session, **(args | kw))

    with pytest.raises(ConfigError, match="not a principal type"):
        issue(principal_type="robot")
    with pytest.raises(NotFound, match="ghost"):
        issue(principal_id="ghost")
    with pytest.raises(NotFound, match="No site"):
        issue(principal_type="site", principal_id="nowhere")
    with pytest.raises(ConfigError, match="positive"):
        issue(expires_in=timedelta(0))
    with pytest.raises(ConfigError, match="at most 200"):
        issue(name="n" * 201)
    assert service.list_tokens(session) == []


def test_list_and_get_tokens(session: Session, pepper: bytes, alice: str) -> None:
    _, a = service.issue_token(
        session, pepper=pepper, principal_type="user", principal_id=alice, created_by="root"
    )
    _, b = service.issue_token(
        session, pepper=pepper, principal_type="user", principal_id="root", created_by="root"
    )
    assert a.id != b.id
    assert {t.id for t in service.list_tokens(session)} == {a.id, b.id}
    assert [t.id for t in service.list_tokens(session, principal_id=alice)] == [a.id]
    assert service.get_token(session, a.id).principal_id == alice
    with pytest.raises(NotFound):
        service.get_token(session, "tok_nope")
    with pytest.raises(NotFound):
        service.revoke_token(session, token_id="tok_nope", by="root")


def test_bootstrap_admin_only_once(session: Session, pepper: bytes) -> None:
    token = service.bootstrap_admin(session, pepper=pepper)
    assert token is not None
    principal = service.authenticate(session, token=token, pepper=pepper)
    assert (principal.id, principal.role, principal.is_admin) == ("admin", "admin", True)
    assert service.bootstrap_admin(session, pepper=pepper) is None
    assert [u.id for u in service.list_users(session)] == ["admin"]
    assert len(service.list_tokens(session)) == 1


def test_bootstrap_admin_does_nothing_when_users_exist(session: Session, pepper: bytes) -> None:
    service.create_user(session, user_id="alice", role="auditor", created_by="x")
    assert service.bootstrap_admin(session, pepper=pepper, user_id="boss") is None
    with pytest.raises(NotFound):
        service.get_user(session, "boss")
