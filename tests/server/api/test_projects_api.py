"""Projects through the API: members see theirs, others get the same 404 as for nothing."""

from __future__ import annotations

from fastapi.testclient import TestClient

from .conftest import Headers


def _error(answer) -> dict:
    error = dict(answer.json()["error"])
    error.pop("request_id")
    return error


def test_admin_creates_a_project_and_manages_members(
    api: TestClient, admin: Headers, make_user
) -> None:
    created = api.post(
        "/v1/projects", json={"id": "cardio", "description": "Heart models"}, headers=admin
    )
    assert created.status_code == 201
    assert created.json()["members"] == []
    user, headers = make_user("data_scientist")
    added = api.put(f"/v1/projects/cardio/members/{user.id}", headers=admin)
    assert added.status_code == 200
    assert added.json()["members"] == [user.id]
    # Adding twice changes nothing.
    assert api.put(f"/v1/projects/cardio/members/{user.id}", headers=admin).json()["members"] == [
        user.id
    ]
    assert api.get("/v1/projects/cardio", headers=headers).status_code == 200
    removed = api.delete(f"/v1/projects/cardio/members/{user.id}", headers=admin)
    assert removed.json()["members"] == []
    # No longer a member: the project is invisible, not forbidden.
    assert api.get("/v1/projects/cardio", headers=headers).status_code == 404


def test_project_mistakes_are_refused(api: TestClient, admin: Headers) -> None:
    api.post("/v1/projects", json={"id": "cardio"}, headers=admin)
    assert api.post("/v1/projects", json={"id": "cardio"}, headers=admin).status_code == 409
    bad = api.post("/v1/projects", json={"id": "Cardio Team"}, headers=admin)
    assert bad.status_code == 422
    long = api.post("/v1/projects", json={"id": "x", "description": "d" * 1001}, headers=admin)
    assert long.status_code == 422
    unknown_user = api.put("/v1/projects/cardio/members/ghost", headers=admin)
    assert unknown_user.status_code == 404
    assert "ghost" in unknown_user.json()["error"]["message"]
    not_member = api.delete("/v1/projects/cardio/members/root", headers=admin)
    assert not_member.status_code == 404
    assert "not a member" in not_member.json()["error"]["message"]
    assert api.put("/v1/projects/nothing/members/root", headers=admin).status_code == 404


def test_other_projects_look_exactly_like_missing_ones(
    api: TestClient, admin: Headers, make_user
) -> None:
    _, alpha = make_user("data_scientist", projects=["alpha"])
    make_user("data_scientist", projects=["beta"])
    hidden = api.get("/v1/projects/beta", headers=alpha)
    missing = api.get("/v1/projects/gamma", headers=alpha)
    assert hidden.status_code == missing.status_code == 404
    expected = _error(missing)
    expected["message"] = expected["message"].replace("gamma", "beta")
    assert _error(hidden) == expected
    # Even an admin's real miss reads the same.
    assert _error(api.get("/v1/projects/beta-not", headers=admin))["code"] == "not_found"


def test_listing_shows_only_the_callers_projects(
    api: TestClient, admin: Headers, make_user
) -> None:
    _, scientist = make_user("data_scientist", projects=["alpha", "beta"])
    make_user("data_scientist", projects=["gamma"])
    assert [p["id"] for p in api.get("/v1/projects", headers=scientist).json()] == [
        "alpha",
        "beta",
    ]
    assert [p["id"] for p in api.get("/v1/projects", headers=admin).json()] == [
        "alpha",
        "beta",
        "gamma",
    ]


def test_members_cannot_change_membership(api: TestClient, make_user) -> None:
    user, scientist = make_user("data_scientist", projects=["alpha"])
    answer = api.put(f"/v1/projects/alpha/members/{user.id}", headers=scientist)
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "forbidden"


def test_hidden_denial_is_audited_as_denied(api: TestClient, make_user, audit_events) -> None:
    user, alpha = make_user("data_scientist", projects=["alpha"])
    make_user("data_scientist", projects=["beta"])
    api.get("/v1/projects/beta", headers=alpha)
    (event,) = audit_events(actor=user.id, action="project.read")
    assert event["outcome"] == "denied"
    assert event["project"] == "beta"
    assert event["details"]["status"] == 404
