"""Sites through the API: registering enrolls a node key on the SuperLink; revoking removes it."""

from __future__ import annotations

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from sqlmodel import Session

from fedvault.common.pki import generate_node_keys
from fedvault.server.api.services import Services
from fedvault.server.identity import PrincipalType, add_site, issue_token

from .conftest import Headers, MakeUser, bearer
from .fake_federation import FakeFederation


@pytest.fixture
def federation(services: Services) -> FakeFederation:
    fake = FakeFederation()
    services.federation = fake  # type: ignore[assignment]
    return fake


def _key(name: str = "site-x") -> str:
    return generate_node_keys(name).public_openssh.decode()


def _register(
    api: TestClient, headers: Headers, site_id: str, key: str | None = None
) -> httpx.Response:
    body = {"id": site_id, "public_key": key or _key(site_id), "description": "Clinic"}
    return api.post("/v1/sites", json=body, headers=headers)


def test_register_enrolls_the_node_key_on_the_superlink(
    api: TestClient, admin: Headers, federation: FakeFederation, audit_events
) -> None:
    key = _key("clinic-1")
    answer = _register(api, admin, "clinic-1", key)
    assert answer.status_code == 201, answer.text
    site = answer.json()
    assert site["id"] == "clinic-1"
    assert site["status"] == "registered"
    assert isinstance(site["node_id"], str), "64-bit ids go out as text, exact in any client"
    enrolled_key, name = federation.registered[int(site["node_id"])]
    assert enrolled_key.decode().split()[:2] == key.split()[:2]
    assert name == "clinic-1"
    assert "fingerprint" not in site  # no hashes in answers
    (event,) = audit_events(action="site.register")
    assert event["outcome"] == "allowed"
    assert event["details"]["node_id"] == site["node_id"]


def test_listing_and_reading_show_whether_the_node_is_online(
    api: TestClient, admin: Headers, federation: FakeFederation
) -> None:
    first = _register(api, admin, "clinic-1").json()
    _register(api, admin, "clinic-2")
    federation.online.add(int(first["node_id"]))
    listed = {s["id"]: s["connection"] for s in api.get("/v1/sites", headers=admin).json()}
    assert listed == {"clinic-1": "online", "clinic-2": "registered"}
    one = api.get("/v1/sites/clinic-1", headers=admin).json()
    assert one["connection"] == "online"
    assert one["description"] == "Clinic"


def test_connection_is_unknown_while_the_federation_is_down(
    api: TestClient, admin: Headers, services: Services
) -> None:
    with Session(services.engine) as session:
        add_site(session, site_id="clinic-1", public_key=_key(), created_by="tests")
    answer = api.get("/v1/sites/clinic-1", headers=admin)
    assert answer.status_code == 200
    assert answer.json()["connection"] == "unknown"


def test_register_without_a_federation_is_503_and_keeps_nothing(
    api: TestClient, admin: Headers
) -> None:
    answer = _register(api, admin, "clinic-1")
    assert answer.status_code == 503
    assert "fedvault server start" in answer.json()["error"]["message"]
    assert api.get("/v1/sites/clinic-1", headers=admin).status_code == 404


def test_a_superlink_failure_during_register_keeps_nothing(
    api: TestClient, admin: Headers, federation: FakeFederation, audit_events
) -> None:
    federation.fail = True
    key = _key("clinic-1")
    answer = _register(api, admin, "clinic-1", key)
    assert answer.status_code == 503
    assert "connection refused" in answer.json()["error"]["message"]
    assert api.get("/v1/sites/clinic-1", headers=admin).status_code == 404
    (event,) = audit_events(action="site.register")
    assert event["outcome"] == "failed"
    federation.fail = False  # the same id and key can be registered once it is back
    assert _register(api, admin, "clinic-1", key).status_code == 201


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"id": "Bad Id", "public_key": "x"}, 422, "id"),
        ({"id": "clinic-1", "public_key": "not a key"}, 422, "OpenSSH"),
        ({"id": "clinic-1"}, 422, "public_key"),
        ({"id": "clinic-1", "public_key": "k", "node_id": 3}, 422, "node_id"),
        ({"id": "clinic-1", "public_key": "a\nb"}, 422, "single OpenSSH line"),
    ],
)
def test_bad_registrations_are_refused_with_a_reason(
    api: TestClient,
    admin: Headers,
    federation: FakeFederation,
    body: dict[str, str],
    status: int,
    words: str,
) -> None:
    answer = api.post("/v1/sites", json=body, headers=admin)
    assert answer.status_code == status
    assert words in answer.text
    assert federation.registered == {}


def test_an_rsa_key_is_refused_because_flower_needs_ecdsa(
    api: TestClient, admin: Headers, federation: FakeFederation
) -> None:
    rsa_key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    answer = _register(api, admin, "clinic-1", rsa_key)
    assert answer.status_code == 422
    assert "ECDSA" in answer.json()["error"]["message"]
    assert federation.registered == {}


def test_duplicate_ids_and_keys_are_409(
    api: TestClient, admin: Headers, federation: FakeFederation
) -> None:
    key = _key("clinic-1")
    assert _register(api, admin, "clinic-1", key).status_code == 201
    again = _register(api, admin, "clinic-1")
    assert again.status_code == 409
    same_key = _register(api, admin, "clinic-2", key)
    assert same_key.status_code == 409
    assert "clinic-1" in same_key.json()["error"]["message"]
    assert len(federation.registered) == 1


def test_revoke_takes_the_node_off_the_allow_list_and_ends_site_tokens(
    api: TestClient, admin: Headers, federation: FakeFederation, services: Services
) -> None:
    node_id = int(_register(api, admin, "clinic-1").json()["node_id"])
    with Session(services.engine) as session:
        token, _ = issue_token(
            session,
            pepper=services.pepper,
            principal_type=PrincipalType.SITE.value,
            principal_id="clinic-1",
            created_by="tests",
        )
    assert api.get("/v1/me", headers=bearer(token)).status_code == 200
    answer = api.delete("/v1/sites/clinic-1", headers=admin)
    assert answer.status_code == 200
    assert answer.json()["status"] == "revoked"
    assert answer.json()["revoked_at"] is not None
    assert federation.unregistered == [node_id]
    assert node_id not in federation.registered
    assert api.get("/v1/me", headers=bearer(token)).status_code == 401
    # Revoking again changes nothing and does not call the SuperLink.
    assert api.delete("/v1/sites/clinic-1", headers=admin).status_code == 200
    assert federation.unregistered == [node_id]


def test_revoke_during_a_superlink_failure_changes_nothing(
    api: TestClient, admin: Headers, federation: FakeFederation
) -> None:
    _register(api, admin, "clinic-1")
    federation.fail = True
    answer = api.delete("/v1/sites/clinic-1", headers=admin)
    assert answer.status_code == 503
    federation.fail = False
    assert api.get("/v1/sites/clinic-1", headers=admin).json()["status"] == "registered"


def test_unknown_site_is_404_and_bad_id_422(api: TestClient, admin: Headers) -> None:
    missing = api.get("/v1/sites/nowhere", headers=admin)
    assert missing.status_code == 404
    assert "nowhere" in missing.json()["error"]["message"]
    assert api.delete("/v1/sites/nowhere", headers=admin).status_code == 404
    assert api.get("/v1/sites/NOT_VALID", headers=admin).status_code == 422


def test_a_site_operator_reads_only_their_own_site(
    api: TestClient, make_user: MakeUser, federation: FakeFederation
) -> None:
    _, operator = make_user("site_operator", site_id="site-a")
    make_user("site_operator", site_id="site-b")
    assert api.get("/v1/sites/site-a", headers=operator).status_code == 200
    assert api.get("/v1/sites/site-b", headers=operator).status_code == 403
    assert api.delete("/v1/sites/site-a", headers=operator).status_code == 403
    assert _register(api, operator, "clinic-9").status_code == 403
    assert federation.registered == {}


def test_data_scientists_cannot_register_sites(
    api: TestClient, make_user: MakeUser, federation: FakeFederation
) -> None:
    _, scientist = make_user("data_scientist", projects=["alpha"])
    assert _register(api, scientist, "clinic-1").status_code == 403
    assert federation.registered == {}
