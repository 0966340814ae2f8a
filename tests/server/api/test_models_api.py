"""Models through the API: listing per project, lineage, decrypting downloads and export rules."""

from __future__ import annotations

import json
import os

import pytest
from fastapi.testclient import TestClient

from fedvault.server.api.services import Services

from .conftest import Headers, MakeUser, Store

SECRET_FIELDS = ("sha256", "wrapped_key", "blob", "kek_version", "stored_size")


@pytest.fixture
def alice(make_user: MakeUser) -> Headers:
    return make_user("data_scientist", projects=["alpha"])[1]


@pytest.fixture
def bob(make_user: MakeUser) -> Headers:
    return make_user("data_scientist", projects=["beta"])[1]


def test_members_list_only_their_projects_models(
    api: TestClient, alice: Headers, bob: Headers, admin: Headers, store_model: Store
) -> None:
    store_model("alpha-model")
    store_model("alpha-model")
    store_model("beta-model", project="beta")
    store_model("legacy", project=None)
    (mine,) = api.get("/v1/models", headers=alice).json()
    assert mine["id"] == "alpha-model"
    assert mine["project"] == "alpha"
    assert (mine["versions"], mine["latest_version"]) == (2, 2)
    assert [m["id"] for m in api.get("/v1/models", headers=bob).json()] == ["beta-model"]
    everything = {m["id"]: m["project"] for m in api.get("/v1/models", headers=admin).json()}
    assert everything == {"alpha-model": "alpha", "beta-model": "beta", "legacy": "default"}


def test_a_model_shows_every_version_with_lineage_and_no_hashes_or_keys(
    api: TestClient, alice: Headers, store_model: Store
) -> None:
    store_model("m")
    store_model("m", parent=("m", 1), exports=(True, False))
    answer = api.get("/v1/models/m", headers=alice)
    assert answer.status_code == 200
    model = answer.json()
    assert [v["version"] for v in model["history"]] == [1, 2]
    first, second = model["history"]
    assert first["export_allowed"] is True
    assert second["export_allowed"] is False
    assert second["parent"] == "m:1"
    assert [s["site"] for s in second["sites"]] == ["site-0", "site-1"]
    assert second["sites"][0]["epsilon"] == 1.5
    assert [s["allow-export"] for s in second["sites"]] == [True, False]
    assert second["dp"] == {"target-epsilon": 4.0}
    text = answer.text
    for secret in SECRET_FIELDS:
        assert secret not in text


def test_one_version_with_its_lineage(api: TestClient, alice: Headers, store_model: Store) -> None:
    stored = store_model("m", data=b"x" * 1000)
    version = api.get("/v1/models/m/versions/1", headers=alice).json()
    assert version["model_id"] == "m"
    assert version["run_id"] == "trial"
    assert version["size"] == 1000
    assert version["metrics"] == {"accuracy": 0.9}
    assert stored.sha256 not in json.dumps(version)


def test_download_streams_the_decrypted_bytes_and_is_audited(
    api: TestClient, alice: Headers, store_model: Store, audit_events
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # several segments
    store_model("m")
    store_model("m", data=data)
    answer = api.get("/v1/models/m/versions/2/download", headers=alice)
    assert answer.status_code == 200
    assert answer.content == data
    assert answer.headers["content-type"] == "application/octet-stream"
    assert 'filename="m-v2.safetensors"' in answer.headers["content-disposition"]
    (event,) = audit_events(action="model.download")
    assert (event["resource_type"], event["resource_id"]) == ("model", "m:2")
    assert event["outcome"] == "allowed"
    assert event["project"] == "alpha"
    assert event["details"]["version"] == 2


def test_download_is_refused_unless_every_site_allows_export(
    api: TestClient, alice: Headers, admin: Headers, store_model: Store, audit_events
) -> None:
    store_model("m", exports=(True, False))
    for caller in (alice, admin):
        answer = api.get("/v1/models/m/versions/1/download", headers=caller)
        assert answer.status_code == 403
        assert "model:download" in answer.json()["error"]["message"]
        assert b"weights" not in answer.content
    assert [e["outcome"] for e in audit_events(action="model.download")] == ["denied", "denied"]
    # Reading its metadata is still allowed.
    assert api.get("/v1/models/m/versions/1", headers=alice).status_code == 200


def test_another_projects_model_answers_exactly_like_a_missing_one(
    api: TestClient, bob: Headers, store_model: Store
) -> None:
    store_model("hidden")
    for path in ("", "/versions/1", "/versions/1/download"):
        theirs = api.get(f"/v1/models/hidden{path}", headers=bob)
        missing = api.get(f"/v1/models/nothing{path}", headers=bob)
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json()["error"]["message"] == missing.json()["error"]["message"].replace(
            "nothing", "hidden"
        )


def test_models_without_a_project_belong_to_default(
    api: TestClient, make_user: MakeUser, alice: Headers, store_model: Store
) -> None:
    store_model("legacy", project=None)
    _, member = make_user("data_scientist", projects=["default"])
    assert api.get("/v1/models/legacy", headers=member).json()["project"] == "default"
    assert api.get("/v1/models/legacy", headers=alice).status_code == 404


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/models/bad%20id", 422),
        ("/v1/models/..", 404),
        ("/v1/models/m/versions/0", 422),
        ("/v1/models/m/versions/x", 422),
        ("/v1/models/m/versions/99999999999", 422),
        ("/v1/models/m/versions/7", 404),
        ("/v1/models/m/versions/7/download", 404),
        ("/v1/models/nothing", 404),
    ],
)
def test_bad_or_unknown_ids_are_4xx_with_a_message(
    api: TestClient, alice: Headers, store_model: Store, path: str, status: int
) -> None:
    store_model("m")
    answer = api.get(path, headers=alice)
    assert answer.status_code == status
    assert answer.json()["error"]["message"]


def test_a_tampered_blob_is_never_served(
    api: TestClient, alice: Headers, store_model: Store, services: Services
) -> None:
    store_model("m", data=b"precious weights" * 100)
    (blob,) = (services.store.blob_dir / "m").glob("*.fvb")
    raw = bytearray(blob.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    blob.write_bytes(bytes(raw))
    answer = api.get("/v1/models/m/versions/1/download", headers=alice)
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "integrity_error"
    assert b"precious" not in answer.content


def test_auditors_and_site_operators_get_no_models(
    api: TestClient, make_user: MakeUser, store_model: Store
) -> None:
    store_model("m")
    _, auditor = make_user("auditor")
    _, operator = make_user("site_operator")
    assert api.get("/v1/models", headers=auditor).status_code == 403
    assert api.get("/v1/models/m/versions/1/download", headers=auditor).status_code == 403
    assert api.get("/v1/models", headers=operator).status_code == 403
    assert api.get("/v1/models/m/versions/1/download", headers=operator).status_code == 404


def test_no_token_no_models(api: TestClient, store_model: Store) -> None:
    store_model("m")
    assert api.get("/v1/models").status_code == 401
    assert api.get("/v1/models/m/versions/1/download").status_code == 401
