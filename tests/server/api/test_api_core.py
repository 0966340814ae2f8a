"""The API's edges: request ids, headers, error bodies, body limits, 500s and the audit trail."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fedvault.server.api.app import create_app
from fedvault.server.audit.query import EventFilter, query_events
from fedvault.server.core.settings import ServerSettings

from .conftest import Headers


def test_health_needs_no_token_and_is_not_audited(api: TestClient, audit_events) -> None:
    answer = api.get("/v1/health")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "database": "ok", "federation": "not_running"}
    assert audit_events() == []


def test_request_id_is_echoed_or_made(api: TestClient) -> None:
    assert (
        api.get("/v1/health", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"]
        == "abc-123"
    )
    made = api.get("/v1/health").headers["x-request-id"]
    assert len(made) == 32
    # An id that could smuggle text into logs is replaced, not echoed.
    replaced = api.get("/v1/health", headers={"X-Request-ID": "a b\tc" + "x" * 100})
    assert replaced.headers["x-request-id"] != "a b\tc" + "x" * 100


def test_security_headers_on_every_answer(api: TestClient) -> None:
    for answer in (api.get("/v1/health"), api.get("/v1/me"), api.get("/nowhere")):
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["cache-control"] == "no-store"
        assert "default-src 'none'" in answer.headers["content-security-policy"]


def test_missing_token_is_401_with_bearer_challenge(api: TestClient) -> None:
    answer = api.get("/v1/users", headers={"X-Request-ID": "req-1"})
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    error = answer.json()["error"]
    assert error["code"] == "unauthenticated"
    assert "Authorization: Bearer" in error["message"]
    assert error["request_id"] == "req-1"


def test_unknown_route_and_wrong_method_answer_json(api: TestClient, admin: Headers) -> None:
    missing = api.get("/v1/nothing-here", headers=admin)
    assert missing.status_code == 404
    assert "No endpoint GET /v1/nothing-here" in missing.json()["error"]["message"]
    wrong = api.delete("/v1/users", headers=admin)
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


def test_malformed_json_is_400_with_reason(api: TestClient, admin: Headers) -> None:
    answer = api.post(
        "/v1/users", content=b'{"id": "bob",', headers={**admin, "content-type": "application/json"}
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["message"].startswith("Request body is not valid JSON:")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"id": "bob", "role": "data_scientist", "admin": True}, "body.admin"),
        ({"id": "bob", "role": "wizard"}, "body.role"),
        ({"id": "Bob!", "role": "auditor"}, "body.id"),
        ({"id": 7, "role": "auditor"}, "body.id"),
        ({"role": "auditor"}, "body.id"),
        ([], "body"),
    ],
)
def test_bad_fields_are_422_naming_the_field(
    api: TestClient, admin: Headers, body: object, field: str
) -> None:
    answer = api.post("/v1/users", json=body, headers=admin)
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "invalid"
    assert any(problem.startswith(f"{field}:") for problem in error["fields"]), error
    assert field in error["message"]


def test_bad_path_ids_are_422(api: TestClient, admin: Headers) -> None:
    for path in ("/v1/users/UPPER", "/v1/projects/-x", "/v1/policies/under_score"):
        answer = api.get(path, headers=admin)
        assert answer.status_code == 422, path
        assert "path." in answer.json()["error"]["message"]


def test_oversized_body_is_413(api: TestClient, admin: Headers) -> None:
    big = json.dumps({"id": "bob", "role": "auditor", "display_name": "x" * (1 << 20)})
    answer = api.post(
        "/v1/users", content=big, headers={**admin, "content-type": "application/json"}
    )
    assert answer.status_code == 413
    assert "larger than 1048576 bytes" in answer.json()["error"]["message"]

    def chunks():  # no Content-Length: counted while it streams
        yield b'{"id": "bob", "role": "auditor", "display_name": "'
        for _ in range(40):
            yield b"y" * 32768
        yield b'"}'

    streamed = api.post(
        "/v1/users", content=chunks(), headers={**admin, "content-type": "application/json"}
    )
    assert streamed.status_code == 413
    assert api.get("/v1/users/bob", headers=admin).status_code == 404


def test_unexpected_error_is_500_without_details(settings: ServerSettings) -> None:
    app: FastAPI = create_app(settings)

    @app.get("/v1/broken")
    def broken() -> None:
        raise RuntimeError("secret internals /etc/passwd")

    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.get("/v1/broken", headers={"X-Request-ID": "boom-1"})
        services = client.app.state.services
        (event,) = query_events(services.engine, EventFilter(), limit=10).events
    assert answer.status_code == 500
    assert answer.json() == {
        "error": {
            "code": "internal_error",
            "message": "Internal error; quote request id boom-1 to the operator.",
            "request_id": "boom-1",
        }
    }
    assert "secret" not in answer.text
    assert event["request_id"] == "boom-1"
    assert event["outcome"] == "failed"
    assert event["details"] == {
        "method": "GET",
        "path": "/v1/broken",
        "status": 500,
        "reason": "internal error",
    }


def test_each_request_is_one_audit_event(
    api: TestClient, admin: Headers, make_user, audit_events
) -> None:
    _, scientist = make_user("data_scientist", projects=["alpha"])
    api.get("/v1/users", headers={**admin, "X-Request-ID": "list-1"})
    api.get("/v1/users", headers={**scientist, "X-Request-ID": "list-2"})
    api.get("/v1/users", headers={"Authorization": "Bearer fvt_wrong", "X-Request-ID": "list-3"})
    events = {e["request_id"]: e for e in audit_events()}
    allowed, denied, login = events["list-1"], events["list-2"], events["list-3"]
    assert allowed["actor"] == "root"
    assert allowed["action"] == "user.list"
    assert allowed["outcome"] == "allowed"
    assert allowed["policy"].startswith("admin @")
    assert allowed["details"] == {"method": "GET", "path": "/v1/users", "status": 200}
    assert denied["outcome"] == "denied"
    assert denied["actor_type"] == "user"
    assert denied["details"]["status"] == 403
    assert "may not user:list" in denied["details"]["reason"]
    assert login["action"] == "auth.login"
    assert login["actor"] == "anonymous"
    assert login["outcome"] == "denied"
    assert "fvt_wrong" not in json.dumps(list(events.values()))


def test_route_template_not_raw_path_is_recorded(
    api: TestClient, admin: Headers, audit_events
) -> None:
    api.get("/v1/users/root?secret=1", headers={**admin, "X-Request-ID": "tmpl"})
    (event,) = audit_events(actor="root", action="user.read")
    assert event["details"]["path"] == "/v1/users/{user_id}"
    assert event["resource_type"] == "user"
    assert event["resource_id"] == "root"


def test_no_answer_when_the_audit_log_cannot_record(
    api: TestClient, admin: Headers, services
) -> None:
    services.audit.close()
    answer = api.get("/v1/users", headers=admin)
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "audit_unavailable"
    assert "root" not in answer.text


def test_the_api_starts_without_loading_torch() -> None:
    """The admin plane only validates run settings: torch and Opacus (seconds of start-up
    and hundreds of MiB) load on the first run submitted, not when the server starts."""
    probe = (
        "import sys; import fedvault.server.api.app; "
        "print(sorted(m for m in ('torch', 'opacus', 'flwr') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "[]"


def test_dependency_overrides_reach_the_resource_routes(settings: ServerSettings) -> None:
    """Tests and embedders override dependencies on the app; every route must see them."""
    from fedvault.server.api.deps import current_principal
    from fedvault.server.identity import Principal
    from fedvault.server.identity.tables import PrincipalType

    app: FastAPI = create_app(settings)
    auditor = Principal(PrincipalType.USER, "overridden", "auditor", frozenset())
    app.dependency_overrides[current_principal] = lambda: auditor
    with TestClient(app) as client:
        answer = client.get("/v1/audit/events")  # no token: only the override lets it in
    assert answer.status_code == 200, answer.text
