"""Every endpoint for every role: the default policies allow exactly what the design says.

One app (SQLite) serves the whole module: the matrix is about policy decisions, and the
database behaviour of each route is pinned by its own tests on SQLite and PostgreSQL.
An allowed call may still fail for its own reasons (no federation: 503); what it must not
do is answer 401/403, or 404 for an object that exists. A denied call answers 403, or 404
where the object's project is not the caller's.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from fedvault.common.pki import generate_node_keys
from fedvault.server.api.app import create_app
from fedvault.server.core.settings import ServerSettings
from fedvault.server.identity import add_site, ensure_pepper
from fedvault.server.runs.tables import RunRecord
from fedvault.server.serve.datadir import init_data_dir
from fedvault.server.store.service import Lineage
from fedvault.server.store.tables import ModelRecord

from .conftest import Headers, add_user, new_token

ROLES = ("admin", "data_scientist", "auditor", "site_operator")
EVERYONE = frozenset(ROLES)
ADMIN = frozenset({"admin"})
AUDIT = frozenset({"admin", "auditor"})
SCIENCE = frozenset({"admin", "data_scientist"})
HARMLESS = 'permit (principal is User, action == Action::"user:list", resource is Server)\n'
HARMLESS += 'when { principal.role == "nobody" };\n'


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # {me}: the caller's id; {spare}: a spare token of the caller
    allowed: frozenset[str]
    body: Any = None
    scoped: bool = False  # the object belongs to project alpha: outsiders get 404
    params: dict[str, Any] = field(default_factory=dict)
    may_miss: bool = False  # allowed callers may get 404: the content is not there

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"


CALLS = [
    Call("GET", "/v1/health", EVERYONE),
    Call("GET", "/metrics", AUDIT),
    Call("GET", "/v1/me", EVERYONE),
    Call("POST", "/v1/users", ADMIN, {"id": "new-{me}", "role": "auditor"}),
    Call("GET", "/v1/users", ADMIN),
    Call("GET", "/v1/users/{me}", EVERYONE),
    Call("GET", "/v1/users/other", ADMIN),
    Call("PATCH", "/v1/users/other", ADMIN, {"disabled": False}),
    Call("POST", "/v1/users/{me}/tokens", EVERYONE, {"name": "more"}),
    Call("POST", "/v1/users/other/tokens", ADMIN, {}),
    Call("GET", "/v1/users/{me}/tokens", EVERYONE),
    Call("GET", "/v1/users/other/tokens", ADMIN),
    Call("DELETE", "/v1/tokens/{spare}", EVERYONE),
    Call("DELETE", "/v1/tokens/{others}", ADMIN),
    Call("POST", "/v1/projects", ADMIN, {"id": "p-{me}"}),
    Call("GET", "/v1/projects", SCIENCE),
    Call("GET", "/v1/projects/alpha", SCIENCE, scoped=True),
    Call("PUT", "/v1/projects/alpha/members/other", ADMIN, scoped=True),
    Call("DELETE", "/v1/projects/alpha/members/other", ADMIN, scoped=True),
    Call("GET", "/v1/policies", ADMIN),
    Call("GET", "/v1/policies/admin", ADMIN),
    Call("PUT", "/v1/policies/extra-{me}", ADMIN, {"text": HARMLESS}),
    Call("DELETE", "/v1/policies/extra", ADMIN),
    Call("GET", "/v1/policies/admin/versions", ADMIN),
    Call(
        "POST",
        "/v1/policies/decide",
        ADMIN,
        {
            "principal": {"type": "user", "id": "other"},
            "action": "project:read",
            "resource": {"type": "Project", "id": "alpha", "project": "alpha"},
        },
    ),
    Call("POST", "/v1/sites", ADMIN, {"id": "new-site", "public_key": "{node_key}"}),
    Call("GET", "/v1/sites", ADMIN),
    Call("GET", "/v1/sites/site-a", frozenset({"admin", "site_operator"})),
    Call("DELETE", "/v1/sites/site-b", ADMIN),
    Call(
        "POST",
        "/v1/projects/alpha/runs",
        SCIENCE,
        {"rounds": 1, "dataset": "blobs", "model": "mlp"},
        scoped=True,
    ),
    Call("GET", "/v1/projects/alpha/runs", SCIENCE, scoped=True),
    Call("GET", "/v1/runs/run-0123456789ab", SCIENCE, scoped=True),
    Call("POST", "/v1/runs/run-0123456789ab/stop", SCIENCE, scoped=True),
    Call("GET", "/v1/models", SCIENCE),
    Call("GET", "/v1/models/m-alpha", SCIENCE, scoped=True),
    Call("GET", "/v1/models/m-alpha/versions/1", SCIENCE, scoped=True),
    Call("GET", "/v1/models/m-alpha/versions/1/download", SCIENCE, scoped=True),
    Call("GET", "/v1/audit/events", AUDIT),
    Call("GET", "/v1/audit/export", AUDIT, params={"format": "jsonl"}),
    Call("POST", "/v1/audit/verify", AUDIT),
    Call("GET", "/v1/audit/proofs/inclusion/{seq}", AUDIT),
    Call("GET", "/v1/audit/proofs/consistency", AUDIT, params={"old": "{old}", "new": "{new}"}),
    Call("GET", "/v1/audit/checkpoint", AUDIT),
    Call("GET", "/v1/audit/public-key", AUDIT),
    Call("GET", "/v1/audit/reports/model-access/m-alpha", AUDIT),
    Call("GET", "/v1/audit/reports/principal/root", AUDIT),
    Call("GET", "/v1/audit/reports/denied", AUDIT),
    Call("GET", "/v1/audit/reports/privacy", AUDIT),
    # No run recorded storing m-alpha:1, so the report itself is a 404.
    Call("GET", "/v1/audit/reports/lineage/m-alpha/1", AUDIT, may_miss=True),
]


@dataclass
class World:
    client: TestClient
    headers: dict[str, Headers]
    ids: dict[str, str]
    values: dict[str, str]

    def fill(self, text: str, role: str) -> str:
        for name, value in {"me": self.ids[role], **self.values, **self.spares[role]}.items():
            text = text.replace("{" + name + "}", value)
        return text

    spares: dict[str, dict[str, str]] = field(default_factory=dict)


def _token_id(client: TestClient, headers: Headers) -> str:
    return client.get("/v1/me", headers=headers).json()["token_id"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root: Path = tmp_path_factory.mktemp("matrix")
    settings = ServerSettings(data_dir=root / "data", mode="test")
    ensure_pepper(init_data_dir(settings))
    with TestClient(create_app(settings)) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        ids = {
            "admin": "root",
            "data_scientist": "sci",
            "auditor": "aud",
            "site_operator": "op",
        }
        headers = {
            "admin": add_user(services, "admin", user_id="root")[1],
            "data_scientist": add_user(
                services, "data_scientist", user_id="sci", projects=["alpha"]
            )[1],
            "auditor": add_user(services, "auditor", user_id="aud")[1],
            "site_operator": add_user(services, "site_operator", user_id="op")[1],
        }
        others = add_user(services, "data_scientist", user_id="other", projects=["alpha", "beta"])
        with Session(services.engine) as session:
            key = generate_node_keys("site-b").public_openssh.decode()
            add_site(session, site_id="site-b", public_key=key, created_by="tests")
            session.add(
                RunRecord(id="run-0123456789ab", project="alpha", name="r1", created_by="tests")
            )
            session.commit()
        services.store.put_arrays(
            "m-alpha",
            {"w": np.zeros(3, dtype=np.float32)},
            lineage=Lineage(
                run_id="run-0123456789ab", round=1, sites=[{"site": "site-a", "allow-export": True}]
            ),
            creator="tests",
        )
        with Session(services.engine) as session:
            model = session.get(ModelRecord, "m-alpha")
            model.project = "alpha"
            session.add(model)
            session.commit()
        admin = headers["admin"]
        client.put("/v1/policies/extra", json={"text": HARMLESS}, headers=admin)
        old = services.audit.checkpoint().tree_size
        client.get("/v1/me", headers=admin)
        new = services.audit.checkpoint().tree_size
        seq = client.get("/v1/audit/events", headers=admin).json()["events"][0]["seq"]
        world = World(
            client=client,
            headers=headers,
            ids=ids,
            values={
                "others": _token_id(client, others[1]),
                "node_key": generate_node_keys("new").public_openssh.decode(),
                "seq": str(seq),
                "old": str(old),
                "new": str(new),
            },
        )
        for role in ROLES:
            spare = new_token(services, ids[role])
            world.spares[role] = {"spare": _token_id(client, spare)}
        yield world


def _fill(value: Any, world: World, role: str) -> Any:
    if isinstance(value, str):
        return world.fill(value, role)
    if isinstance(value, dict):
        return {k: _fill(v, world, role) for k, v in value.items()}
    return value


@pytest.mark.parametrize("call", CALLS, ids=[c.id for c in CALLS])
def test_role_matrix(world: World, call: Call) -> None:
    wrong: list[str] = []
    for role in ROLES:
        path = world.fill(call.path, role)
        answer = world.client.request(
            call.method,
            path,
            json=_fill(call.body, world, role),
            params=_fill(call.params, world, role),
            headers=world.headers[role],
        )
        status = answer.status_code
        if role in call.allowed:
            refused = (401, 403) if call.may_miss else (401, 403, 404)
            if status in refused or (status >= 500 and status != 503):
                wrong.append(f"{role}: expected allowed, got {status} {answer.text[:200]}")
        else:
            outsider = call.scoped and role not in ("admin", "auditor", "data_scientist")
            expected = 404 if outsider else 403
            if status != expected:
                wrong.append(f"{role}: expected {expected}, got {status} {answer.text[:200]}")
    assert not wrong, "\n".join(wrong)


def test_matrix_covers_every_endpoint(world: World) -> None:
    schema = world.client.get("/openapi.json").json()
    served = {f"{m.upper()} {p}" for p, ops in schema["paths"].items() for m in ops}
    covered = {_template(c) for c in CALLS}
    assert served - covered == set(), "endpoints missing from the role matrix"


def _template(call: Call) -> str:
    path = call.path
    for concrete, name in (
        ("/users/{me}", "/users/{user_id}"),
        ("/users/other", "/users/{user_id}"),
        ("/tokens/{spare}", "/tokens/{token_id}"),
        ("/tokens/{others}", "/tokens/{token_id}"),
        ("/projects/alpha/members/other", "/projects/{project_id}/members/{user_id}"),
        ("/projects/alpha/runs", "/projects/{project}/runs"),
        ("/projects/alpha", "/projects/{project_id}"),
        ("/policies/admin/versions", "/policies/{name}/versions"),
        ("/policies/admin", "/policies/{name}"),
        ("/policies/extra-{me}", "/policies/{name}"),
        ("/policies/extra", "/policies/{name}"),
        ("/sites/site-a", "/sites/{site_id}"),
        ("/sites/site-b", "/sites/{site_id}"),
        ("/runs/run-0123456789ab", "/runs/{run_id}"),
        ("/models/m-alpha/versions/1", "/models/{model_id}/versions/{version}"),
        ("/models/m-alpha", "/models/{model_id}"),
        ("/inclusion/{seq}", "/inclusion/{seq}"),
        ("/model-access/m-alpha", "/model-access/{model_id}"),
        ("/principal/root", "/principal/{actor}"),
        ("/lineage/m-alpha/1", "/lineage/{model_id}/{version}"),
    ):
        if concrete in path:
            path = path.replace(concrete, name)
            break
    return f"{call.method} {path}"
