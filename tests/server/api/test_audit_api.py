"""The audit trail through the API: query, export, verify, proofs and reports, for auditors only."""

from __future__ import annotations

import csv
import io
import json

import pytest
from fastapi.testclient import TestClient

from fedvault.server.api.services import Services
from fedvault.server.audit.merkle import verify_consistency, verify_inclusion
from fedvault.server.audit.signing import Checkpoint, PublicKey
from fedvault.server.store.service import Lineage

from .conftest import Headers, MakeUser


@pytest.fixture
def auditor(make_user: MakeUser) -> Headers:
    return make_user("auditor", user_id="carol")[1]


@pytest.fixture
def busy(api: TestClient, admin: Headers, make_user: MakeUser) -> Headers:
    """Some recorded history: allowed and denied requests by an admin and a data scientist."""
    _, scientist = make_user("data_scientist", projects=["alpha"], user_id="dave")
    api.get("/v1/users", headers=admin)
    api.get("/v1/users", headers=scientist)  # denied
    api.get("/v1/audit/events", headers=scientist)  # denied
    api.get("/v1/models", headers=scientist)
    return scientist


def _events(api: TestClient, headers: Headers, **params: object) -> dict:  # type: ignore[type-arg]
    answer = api.get("/v1/audit/events", params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def test_auditors_page_through_events_without_gaps_or_hashes(
    api: TestClient, auditor: Headers, busy: Headers
) -> None:
    everything = _events(api, auditor, limit=1000)["events"]
    assert len(everything) >= 4
    assert all("hash" not in e and "prev_hash" not in e for e in everything)
    seen, cursor = [], None
    while True:
        page = _events(api, auditor, limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [e["seq"] for e in page["events"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen[: len(everything)] == [e["seq"] for e in everything]
    assert seen == sorted(set(seen))


def test_filters_narrow_the_events(api: TestClient, auditor: Headers, busy: Headers) -> None:
    denied = _events(api, auditor, outcome="denied")["events"]
    assert {(e["actor"], e["action"]) for e in denied} == {
        ("dave", "user.list"),
        ("dave", "audit.read"),
    }
    dave = _events(api, auditor, actor="dave", action="model.list")["events"]
    assert [e["outcome"] for e in dave] == ["allowed"]
    assert _events(api, auditor, since="2999-01-01")["events"] == []
    assert _events(api, auditor, until="2000-01-01T00:00:00Z")["events"] == []


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"outcome": "maybe"}, "outcome"),
        ({"since": "yesterday"}, "ISO 8601"),
        ({"since": "2025-01-01T10:00:00"}, "timezone"),
        ({"since": "2025-02-01", "until": "2025-01-01"}, "empty"),
        ({"until": "9999-12-31T23:59:59-05:00"}, "out of range"),
        ({"cursor": "abc"}, "cursor"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"actor": ""}, "actor"),
        ({"resource_id": "x" * 300}, "resource_id"),
    ],
)
def test_bad_filters_are_4xx_with_a_reason(
    api: TestClient, auditor: Headers, params: dict[str, object], words: str
) -> None:
    answer = api.get("/v1/audit/events", params=params, headers=auditor)
    assert answer.status_code in (400, 422)
    assert words in answer.json()["error"]["message"]


def test_export_streams_jsonl_with_chain_hashes_and_is_itself_audited(
    api: TestClient, auditor: Headers, busy: Headers, audit_events
) -> None:
    answer = api.get("/v1/audit/export", params={"format": "jsonl"}, headers=auditor)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in answer.text.splitlines()]
    assert [e["seq"] for e in lines] == list(range(1, len(lines) + 1))
    assert all(len(e["hash"]) == 64 for e in lines)
    assert lines[1]["prev_hash"] == lines[0]["hash"]
    (export,) = audit_events(action="audit.export")
    assert export["actor"] == "carol"
    assert export["details"]["format"] == "jsonl"
    assert export["seq"] == lines[-1]["seq"]  # recorded before the export was read


def test_export_as_csv_with_a_filter(api: TestClient, auditor: Headers, busy: Headers) -> None:
    answer = api.get(
        "/v1/audit/export", params={"format": "csv", "outcome": "denied"}, headers=auditor
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert rows and {r["outcome"] for r in rows} == {"denied"}
    bad = api.get("/v1/audit/export", params={"format": "xml"}, headers=auditor)
    assert bad.status_code == 422


def test_verify_says_the_log_is_intact(
    api: TestClient, auditor: Headers, busy: Headers, services: Services
) -> None:
    services.audit.checkpoint()
    answer = api.post("/v1/audit/verify", headers=auditor)
    assert answer.status_code == 200
    report = answer.json()
    assert report["ok"] is True
    assert report["problem"] is None
    assert report["events"] >= 4
    assert report["checkpoints"] >= 1
    key = api.get("/v1/audit/public-key", headers=auditor).json()
    assert report["key_id"] == key["key_id"]


def test_public_key_parses_and_matches_the_signing_key(
    api: TestClient, auditor: Headers, services: Services
) -> None:
    key = api.get("/v1/audit/public-key", headers=auditor).json()
    expected = services.audit.signing_key.public.key_id.hex()
    assert PublicKey.parse(key["pem"]).key_id.hex() == expected
    assert PublicKey.parse(key["vkey"]).key_id.hex() == expected
    assert "PRIVATE" not in json.dumps(key)


def test_an_inclusion_proof_verifies_offline(
    api: TestClient, auditor: Headers, busy: Headers, services: Services
) -> None:
    services.audit.checkpoint()
    key = PublicKey.parse(api.get("/v1/audit/public-key", headers=auditor).json()["pem"])
    answer = api.get("/v1/audit/proofs/inclusion/2", headers=auditor)
    assert answer.status_code == 200, answer.text
    proof = answer.json()
    checkpoint = Checkpoint.from_note(proof["checkpoint"])
    assert key.verify(checkpoint)
    assert verify_inclusion(
        leaf=bytes.fromhex(proof["leaf_hash"]),
        index=proof["leaf_index"],
        tree_size=checkpoint.tree_size,
        path=[bytes.fromhex(p) for p in proof["path"]],
        root=checkpoint.root,
    )
    assert proof["event"]["seq"] == 2


def test_inclusion_proof_bad_requests(
    api: TestClient, auditor: Headers, busy: Headers, services: Services
) -> None:
    assert api.get("/v1/audit/proofs/inclusion/1", headers=auditor).status_code == 404
    services.audit.checkpoint()
    beyond = api.get("/v1/audit/proofs/inclusion/100000", headers=auditor)
    assert beyond.status_code == 422
    assert "not covered" in beyond.json()["error"]["message"]
    assert api.get("/v1/audit/proofs/inclusion/0", headers=auditor).status_code == 422
    assert api.get("/v1/audit/proofs/inclusion/x", headers=auditor).status_code == 422


def test_a_consistency_proof_verifies_offline(
    api: TestClient, auditor: Headers, busy: Headers, services: Services
) -> None:
    old = services.audit.checkpoint()
    api.get("/v1/audit/events", headers=auditor)
    new = services.audit.checkpoint()
    assert old is not None and new is not None
    answer = api.get(
        "/v1/audit/proofs/consistency",
        params={"old": old.tree_size, "new": new.tree_size},
        headers=auditor,
    )
    assert answer.status_code == 200, answer.text
    proof = answer.json()
    assert verify_consistency(
        first=proof["old"],
        second=proof["new"],
        first_root=bytes.fromhex(proof["old_root"]),
        second_root=bytes.fromhex(proof["new_root"]),
        path=[bytes.fromhex(p) for p in proof["path"]],
    )
    backwards = api.get(
        "/v1/audit/proofs/consistency",
        params={"old": new.tree_size, "new": old.tree_size},
        headers=auditor,
    )
    assert backwards.status_code == 422
    unknown = api.get("/v1/audit/proofs/consistency", params={"old": 3}, headers=auditor)
    assert unknown.status_code == 404
    assert api.get("/v1/audit/proofs/consistency", headers=auditor).status_code == 422


def test_model_access_report_names_who_downloaded(
    api: TestClient, auditor: Headers, make_user: MakeUser, services: Services
) -> None:
    _, scientist = make_user("data_scientist", projects=["default"], user_id="erin")
    lineage = Lineage(sites=[{"site": "s", "allow-export": True}])
    services.store.put("m", io.BytesIO(b"w"), lineage=lineage, creator="tests")
    assert api.get("/v1/models/m/versions/1/download", headers=scientist).status_code == 200
    rows = api.get("/v1/audit/reports/model-access/m", headers=auditor).json()
    assert {(r["actor"], r["action"], r["outcome"]) for r in rows} == {
        ("erin", "model.download", "allowed")
    }
    one = api.get("/v1/audit/reports/model-access/m", params={"version": 1}, headers=auditor)
    assert one.json()[0]["events"] == 1
    assert api.get("/v1/audit/reports/model-access/x", headers=auditor).json() == []


def test_principal_and_denied_reports(api: TestClient, auditor: Headers, busy: Headers) -> None:
    activity = api.get("/v1/audit/reports/principal/dave", headers=auditor).json()
    assert {(r["action"], r["outcome"]) for r in activity} >= {
        ("user.list", "denied"),
        ("model.list", "allowed"),
    }
    denied = api.get("/v1/audit/reports/denied", headers=auditor).json()
    assert {r["actor"] for r in denied} == {"dave"}
    window = api.get(
        "/v1/audit/reports/denied", params={"since": "2999-01-01"}, headers=auditor
    ).json()
    assert window == []
    for since in ("soon", "0001-01-01T00:00:00+05:00"):
        bad = api.get("/v1/audit/reports/denied", params={"since": since}, headers=auditor)
        assert bad.status_code == 422


def test_privacy_and_lineage_reports(api: TestClient, auditor: Headers) -> None:
    assert api.get("/v1/audit/reports/privacy", headers=auditor).json() == []
    missing = api.get("/v1/audit/reports/lineage/m/1", headers=auditor)
    assert missing.status_code == 404
    assert "no record" in missing.json()["error"]["message"]
    assert api.get("/v1/audit/reports/lineage/m/0", headers=auditor).status_code == 422


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/v1/audit/events"),
        ("get", "/v1/audit/export"),
        ("post", "/v1/audit/verify"),
        ("get", "/v1/audit/public-key"),
        ("get", "/v1/audit/reports/denied"),
    ],
)
def test_only_auditors_and_admins_read_the_audit_trail(
    api: TestClient, make_user: MakeUser, admin: Headers, method: str, path: str
) -> None:
    _, scientist = make_user("data_scientist", projects=["alpha"])
    _, operator = make_user("site_operator")
    _, auditor = make_user("auditor")
    for caller in (scientist, operator):
        assert api.request(method, path, headers=caller).status_code == 403
    for caller in (auditor, admin):
        assert api.request(method, path, headers=caller).status_code == 200
    assert api.request(method, path).status_code == 401
