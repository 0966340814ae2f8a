"""Users and tokens through the API: create, read, disable; tokens issued, used, revoked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlmodel import Session

from fedvault.server.identity import ApiToken

from .conftest import Headers, bearer


def _without_request_id(body: dict) -> dict:
    return {**body, "error": {**body["error"], "request_id": None}}


def test_admin_creates_reads_and_lists_users(api: TestClient, admin: Headers) -> None:
    created = api.post(
        "/v1/users",
        json={"id": "alice", "role": "data_scientist", "display_name": "Alice"},
        headers=admin,
    )
    assert created.status_code == 201
    user = created.json()
    assert user["id"] == "alice"
    assert user["role"] == "data_scientist"
    assert user["created_by"] == "root"
    assert user["created_at"].endswith(("Z", "+00:00"))
    assert api.get("/v1/users/alice", headers=admin).json() == user
    assert [u["id"] for u in api.get("/v1/users", headers=admin).json()] == ["alice", "root"]
    auditors = api.get("/v1/users", params={"role": "auditor"}, headers=admin).json()
    assert auditors == []


def test_user_input_mistakes_are_refused(api: TestClient, admin: Headers) -> None:
    api.post("/v1/users", json={"id": "alice", "role": "auditor"}, headers=admin)
    duplicate = api.post("/v1/users", json={"id": "alice", "role": "auditor"}, headers=admin)
    assert duplicate.status_code == 409
    assert "alice" in duplicate.json()["error"]["message"]
    no_site = api.post("/v1/users", json={"id": "op", "role": "site_operator"}, headers=admin)
    assert no_site.status_code == 422
    assert "site" in no_site.json()["error"]["message"]
    unknown_site = api.post(
        "/v1/users",
        json={"id": "op", "role": "site_operator", "site_id": "nowhere"},
        headers=admin,
    )
    assert unknown_site.status_code == 422
    assert api.get("/v1/users/nobody", headers=admin).status_code == 404
    assert api.patch("/v1/users/nobody", json={"disabled": True}, headers=admin).status_code == 404
    assert api.patch("/v1/users/alice", json={}, headers=admin).status_code == 422


def test_me_names_the_caller(api: TestClient, make_user) -> None:
    user, headers = make_user("data_scientist", projects=["beta", "alpha"])
    me = api.get("/v1/me", headers=headers).json()
    assert me["id"] == user.id
    assert me["type"] == "user"
    assert me["role"] == "data_scientist"
    assert me["projects"] == ["alpha", "beta"]
    assert me["token_id"].startswith("tok_")


def test_token_is_shown_once_and_works(api: TestClient, admin: Headers, make_user) -> None:
    user, _ = make_user("auditor")
    created = api.post(
        f"/v1/users/{user.id}/tokens",
        json={"name": "laptop", "expires_in_days": 7},
        headers=admin,
    )
    assert created.status_code == 201
    body = created.json()
    token = body["token"]
    assert token.startswith("fvt_")
    assert body["name"] == "laptop"
    expires = datetime.fromisoformat(body["expires_at"])
    assert timedelta(days=6) < expires - datetime.now(UTC) <= timedelta(days=7)
    assert api.get("/v1/me", headers=bearer(token)).json()["id"] == user.id
    listed = api.get(f"/v1/users/{user.id}/tokens", headers=admin)
    assert token not in listed.text
    assert "digest" not in listed.text
    assert body["id"] in [t["id"] for t in listed.json()]


def test_token_lifetime_is_bounded(api: TestClient, admin: Headers) -> None:
    for days in (0, 366, -1):
        answer = api.post("/v1/users/root/tokens", json={"expires_in_days": days}, headers=admin)
        assert answer.status_code == 422


def test_revoked_token_stops_working(api: TestClient, admin: Headers, make_user) -> None:
    _, headers = make_user("data_scientist")
    me = api.get("/v1/me", headers=headers).json()
    revoked = api.delete(f"/v1/tokens/{me['token_id']}", headers=admin)
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    assert api.get("/v1/me", headers=headers).status_code == 401
    assert api.delete("/v1/tokens/tok_doesnotexist", headers=admin).status_code == 404
    assert api.delete("/v1/tokens/not-a-token-id", headers=admin).status_code == 422


def test_users_revoke_their_own_tokens_only(api: TestClient, make_user) -> None:
    _, mine = make_user("data_scientist")
    _, theirs = make_user("data_scientist")
    their_token = api.get("/v1/me", headers=theirs).json()["token_id"]
    assert api.delete(f"/v1/tokens/{their_token}", headers=mine).status_code == 403
    my_token = api.get("/v1/me", headers=mine).json()["token_id"]
    assert api.delete(f"/v1/tokens/{my_token}", headers=mine).status_code == 200
    assert api.get("/v1/me", headers=theirs).status_code == 200


def test_every_bad_token_gets_the_same_401(
    api: TestClient, admin: Headers, make_user, services
) -> None:
    _, expired = make_user("auditor")
    _, revoked = make_user("auditor")
    disabled_user, disabled = make_user("auditor")
    with Session(services.engine) as session:
        row = session.get(ApiToken, api.get("/v1/me", headers=expired).json()["token_id"])
        row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        session.add(row)
        session.commit()
    token_id = api.get("/v1/me", headers=revoked).json()["token_id"]
    api.delete(f"/v1/tokens/{token_id}", headers=admin)
    answer = api.patch(f"/v1/users/{disabled_user.id}", json={"disabled": True}, headers=admin)
    assert answer.json()["disabled"] is True
    real = revoked["Authorization"].removeprefix("Bearer ")
    candidates = {
        "expired": expired,
        "revoked": revoked,
        "disabled user": disabled,
        "malformed": bearer("not-a-token"),
        "bad checksum": bearer(real[:-1] + ("A" if real[-1] != "A" else "B")),
        "unknown": bearer("fvt_" + "a" * 38),
    }
    bodies = {}
    for name, headers in candidates.items():
        answer = api.get("/v1/me", headers=headers)
        assert answer.status_code == 401, name
        assert answer.headers["www-authenticate"] == "Bearer"
        bodies[name] = _without_request_id(answer.json())
    assert len({str(b) for b in bodies.values()}) == 1, bodies


def test_enabling_a_user_again_restores_their_token(
    api: TestClient, admin: Headers, make_user
) -> None:
    user, headers = make_user("data_scientist")
    api.patch(f"/v1/users/{user.id}", json={"disabled": True}, headers=admin)
    assert api.get("/v1/me", headers=headers).status_code == 401
    api.patch(f"/v1/users/{user.id}", json={"disabled": False}, headers=admin)
    assert api.get("/v1/me", headers=headers).status_code == 200


def test_last_admin_cannot_be_disabled(api: TestClient, admin: Headers) -> None:
    answer = api.patch("/v1/users/root", json={"disabled": True}, headers=admin)
    assert answer.status_code == 422
    assert "last enabled admin" in answer.json()["error"]["message"]


def test_repeated_failures_get_429_with_retry_after(
    api: TestClient, admin: Headers, audit_events
) -> None:
    for _ in range(10):
        assert api.get("/v1/me", headers=bearer("fvt_guess")).status_code == 401
    limited = api.get("/v1/me", headers=bearer("fvt_guess"))
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert "Too many failed logins" in limited.json()["error"]["message"]
    # The address is blocked for a while, whatever token it sends next.
    assert api.get("/v1/me", headers=admin).status_code == 429
    logins = audit_events(action="auth.login")
    assert len(logins) == 12
    assert {e["outcome"] for e in logins} == {"denied"}
