"""Policies through the API: edits take effect at once, bad ones are refused, versions kept."""

from __future__ import annotations

from fastapi.testclient import TestClient

from .conftest import Headers

LIST_USERS = """permit (principal is User, action == Action::"user:list", resource is Server)
when { principal.role == "data_scientist" };
"""


def test_defaults_are_in_force(api: TestClient, admin: Headers) -> None:
    names = [p["name"] for p in api.get("/v1/policies", headers=admin).json()]
    assert {"admin", "auditor", "data-scientist", "export"} <= set(names)
    policy = api.get("/v1/policies/admin", headers=admin).json()
    assert policy["version"] == 1
    assert "permit" in policy["text"]
    assert "sha256" not in policy


def test_an_edit_takes_effect_and_a_delete_undoes_it(
    api: TestClient, admin: Headers, make_user, audit_events
) -> None:
    _, scientist = make_user("data_scientist")
    assert api.get("/v1/users", headers=scientist).status_code == 403
    put = api.put("/v1/policies/list-users", json={"text": LIST_USERS}, headers=admin)
    assert put.status_code == 200
    assert put.json()["version"] == 1
    assert api.get("/v1/users", headers=scientist).status_code == 200
    (change,) = audit_events(action="policy.write")
    assert change["details"]["policy"] == "list-users"
    assert len(change["details"]["policy_set"]) == 64
    deleted = api.delete("/v1/policies/list-users", headers=admin)
    assert deleted.json() | {"created_at": None} == {
        "name": "list-users",
        "version": 2,
        "text": LIST_USERS,
        "deleted": True,
        "created_by": "root",
        "created_at": None,
    }
    assert api.get("/v1/users", headers=scientist).status_code == 403
    assert api.get("/v1/policies/list-users", headers=admin).status_code == 404
    assert (
        api.get("/v1/policies/list-users", params={"version": 1}, headers=admin).json()["deleted"]
        is False
    )
    versions = api.get("/v1/policies/list-users/versions", headers=admin).json()
    assert [v["version"] for v in versions] == [1, 2]


def test_invalid_policy_is_refused_and_the_old_one_stays(
    api: TestClient, admin: Headers, make_user
) -> None:
    _, scientist = make_user("data_scientist")
    api.put("/v1/policies/list-users", json={"text": LIST_USERS}, headers=admin)
    for text in (
        "permit (principal, action, resource",  # does not parse
        'permit (principal, action == Action::"user:fly", resource);',  # no such action
        'permit (principal is User, action, resource) when { principal.shoe == "x" };',
    ):
        answer = api.put("/v1/policies/list-users", json={"text": text}, headers=admin)
        assert answer.status_code == 422, text
        assert answer.json()["error"]["message"]
    assert api.get("/v1/policies/list-users", headers=admin).json()["version"] == 1
    assert api.get("/v1/users", headers=scientist).status_code == 200


def test_policy_input_mistakes(api: TestClient, admin: Headers) -> None:
    assert api.put("/v1/policies/Bad_Name", json={"text": "x"}, headers=admin).status_code == 422
    assert api.put("/v1/policies/ok", json={"text": ""}, headers=admin).status_code == 422
    assert api.put("/v1/policies/ok", json={"txt": "x"}, headers=admin).status_code == 422
    assert api.delete("/v1/policies/never-was", headers=admin).status_code == 404
    assert api.get("/v1/policies/never-was/versions", headers=admin).status_code == 404
    assert api.get("/v1/policies/admin", params={"version": 99}, headers=admin).status_code == 404
    assert api.get("/v1/policies/admin", params={"version": 0}, headers=admin).status_code == 422


def test_dry_run_names_the_deciding_policy(api: TestClient, admin: Headers, make_user) -> None:
    user, _ = make_user("data_scientist", projects=["alpha"])
    ask = {
        "principal": {"type": "user", "id": user.id},
        "action": "model:download",
        "resource": {"type": "Model", "id": "m1", "project": "alpha"},
    }
    denied = api.post("/v1/policies/decide", json=ask, headers=admin).json()
    assert denied["allowed"] is False
    assert denied["policies"] == ["export"]
    ask["resource"]["attrs"] = {"export_allowed": True}
    allowed = api.post("/v1/policies/decide", json=ask, headers=admin).json()
    assert allowed == {"allowed": True, "policies": ["data-scientist"], "errors": []}
    ask["resource"]["project"] = "beta"
    assert api.post("/v1/policies/decide", json=ask, headers=admin).json()["allowed"] is False


def test_dry_run_mistakes(api: TestClient, admin: Headers) -> None:
    base = {
        "principal": {"type": "user", "id": "root"},
        "action": "user:list",
        "resource": {"type": "Server", "id": "fedvault"},
    }
    assert api.post("/v1/policies/decide", json=base, headers=admin).json()["allowed"] is True
    unknown = {**base, "principal": {"type": "user", "id": "ghost"}}
    assert api.post("/v1/policies/decide", json=unknown, headers=admin).status_code == 404
    bad_type = {**base, "resource": {"type": "Spaceship", "id": "x"}}
    assert api.post("/v1/policies/decide", json=bad_type, headers=admin).status_code == 422
    bad_action = {**base, "action": "DROP TABLE"}
    assert api.post("/v1/policies/decide", json=bad_action, headers=admin).status_code == 422
