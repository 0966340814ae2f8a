"""The admin plane drives a real federation: sites enrolled over the API, a run, a download."""

from __future__ import annotations

import io
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from safetensors.numpy import load as load_safetensors
from sklearn.datasets import load_digits

from fedvault.common.processes import ManagedProcess
from tests.e2e._server import FEDVAULT, Server, running_server, wait_for

pytestmark = pytest.mark.e2e

SITES = ("hospital-a", "hospital-b")


@dataclass
class Plane:
    server: Server
    root: Path
    admin: httpx.Client
    clients: dict[str, httpx.Client] = field(default_factory=dict)
    agents: dict[str, ManagedProcess] = field(default_factory=dict)

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.server.api,
            verify=self.server.tls(),
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def _user(plane: Plane, user_id: str, role: str, projects: tuple[str, ...] = ()) -> httpx.Client:
    _ok(plane.admin.post("/v1/users", json={"id": user_id, "role": role}), 201)
    for project in projects:
        _ok(plane.admin.put(f"/v1/projects/{project}/members/{user_id}"))
    token = _ok(plane.admin.post(f"/v1/users/{user_id}/tokens", json={"name": "e2e"}), 201)
    return plane.client(token["token"])


def _start_agent(plane: Plane, name: str, index: int) -> None:
    site_dir = plane.root / name
    init = [FEDVAULT, "site", "init", "--site-dir", str(site_dir), "--name", name]
    done = subprocess.run(init, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    policy = site_dir / "site-policy.toml"
    policy.write_text(policy.read_text().replace("allow-export = false", "allow-export = true"))
    digits = load_digits()
    data = plane.root / f"{name}.npz"
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    np.savez(data, x=x[index::2], y=digits.target[index::2].astype(np.int64))
    public_key = (site_dir / "node.key.pub").read_text()
    _ok(plane.admin.post("/v1/sites", json={"id": name, "public_key": public_key}), 201)
    server = f"127.0.0.1:{plane.server.fleet_port}"
    command = [FEDVAULT, "site", "run", "--server", server, "--ca", str(plane.server.paths.ca)]
    command += ["--data", str(data), "--site-dir", str(site_dir), "--restart-delay", "1"]
    plane.agents[name] = ManagedProcess(
        f"agent {name}",
        command,
        env={**os.environ, "COLUMNS": "200"},
        log_path=plane.root / f"{name}-agent.log",
    )


@pytest.fixture(scope="module")
def plane(tmp_path_factory) -> Iterator[Plane]:
    root = tmp_path_factory.mktemp("plane")
    with running_server(root) as server:
        admin = httpx.Client(
            base_url=server.api,
            verify=server.tls(),
            headers={"Authorization": f"Bearer {server.token}"},
            timeout=60,
        )
        plane = Plane(server, root, admin)
        try:
            _ok(admin.post("/v1/projects", json={"id": "oncology"}), 201)
            plane.clients["dana"] = _user(plane, "dana", "data_scientist", ("oncology",))
            plane.clients["eve"] = _user(plane, "eve", "data_scientist")
            plane.clients["audra"] = _user(plane, "audra", "auditor")
            for index, name in enumerate(SITES):
                _start_agent(plane, name, index)
            yield plane
        finally:
            for agent in plane.agents.values():
                agent.stop()
            for client in (admin, *plane.clients.values()):
                client.close()


def _connection(plane: Plane, site: str) -> str:
    return str(_ok(plane.admin.get(f"/v1/sites/{site}"))["connection"])


@pytest.fixture(scope="module")
def finished_run(plane: Plane) -> dict[str, Any]:
    for site in SITES:
        wait_for(
            lambda site=site: _connection(plane, site) == "online",
            timeout=120,
            what=f"{site} did not come online",
            server=plane.server,
        )
    dana = plane.clients["dana"]
    body = {
        "name": "tumour-board",
        "rounds": 2,
        "dataset": "digits",
        "model": "linear",
        "target_epsilon": 3.0,
        "min_sites": 2,
        "local_epochs": 1,
        "wait_timeout": 90,
    }
    run = _ok(dana.post("/v1/projects/oncology/runs", json=body), 201)
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        run = _ok(dana.get(f"/v1/runs/{run['id']}"))
        if run["state"] not in ("submitted", "running"):
            return dict(run)
        time.sleep(2)
    pytest.fail(f"The run did not finish in time: {run}\n{plane.server.log()}")


def test_a_run_submitted_over_the_api_trains_with_both_enrolled_sites(finished_run):
    assert finished_run["state"] == "completed", finished_run
    rounds = finished_run["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(r["accuracy"] > 0.5 for r in rounds[-1:])  # ten classes: chance is 0.1


def test_the_member_downloads_the_model_and_an_outsider_sees_nothing(plane, finished_run):
    dana, eve = plane.clients["dana"], plane.clients["eve"]
    models = _ok(dana.get("/v1/models"))
    assert models, "the run stored no model"
    model_id = models[0]["id"]
    newest = models[0]["latest_version"]
    assert models[0]["project"] == "oncology"
    download = dana.get(f"/v1/models/{model_id}/versions/{newest}/download")
    assert download.status_code == 200, download.text
    weights = load_safetensors(io.BytesIO(download.content).getvalue())
    assert weights and all(np.isfinite(a).all() for a in weights.values())

    assert _ok(eve.get("/v1/models")) == []
    hidden = eve.get(f"/v1/models/{model_id}/versions/{newest}/download")
    missing = eve.get("/v1/models/no-such-model/versions/1/download")
    assert hidden.status_code == missing.status_code == 404
    assert eve.get(f"/v1/runs/{finished_run['id']}").status_code == 404

    audra = plane.clients["audra"]
    access = _ok(audra.get(f"/v1/audit/reports/model-access/{model_id}"))
    actors = {(row["actor"], row["outcome"]) for row in access}
    assert ("dana", "allowed") in actors and ("eve", "denied") in actors
    assert _ok(audra.post("/v1/audit/verify"))["ok"] is True


def test_the_cli_pulls_the_model_over_https_and_explains_a_refusal(plane, finished_run, tmp_path):
    """`fedvault api` with a token file and the server's CA, as a data scientist runs it."""
    model = _ok(plane.clients["dana"].get("/v1/models"))[0]
    path = f"/v1/models/{model['id']}/versions/{model['latest_version']}/download"
    common = ["--url", plane.server.api, "--ca", str(plane.server.paths.ca)]

    def cli(who: str, *args: str) -> subprocess.CompletedProcess[str]:
        token = tmp_path / f"{who}.token"
        token.write_text(plane.clients[who].headers["authorization"].removeprefix("Bearer "))
        token.chmod(0o600)
        command = [FEDVAULT, "api", "GET", path, *args, *common, "--token-file", str(token)]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    pulled = cli("dana", "-o", str(tmp_path / "model.safetensors"))
    assert pulled.returncode == 0, pulled.stderr
    weights = load_safetensors((tmp_path / "model.safetensors").read_bytes())
    assert weights and all(np.isfinite(a).all() for a in weights.values())
    refused = cli("eve", "-o", str(tmp_path / "eve.safetensors"))
    assert refused.returncode == 1
    assert "404 not_found" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "eve.safetensors").exists()


def test_a_revoked_site_is_removed_from_the_federation(plane, finished_run):
    def allowed() -> set[str]:
        return {n.name for n in plane.server.control().nodes() if n.status != "unregistered"}

    assert "hospital-b" in allowed()
    _ok(plane.admin.delete("/v1/sites/hospital-b"))
    assert "hospital-b" not in allowed()
    assert _ok(plane.admin.get("/v1/sites/hospital-b"))["status"] == "revoked"
    wait_for(
        lambda: "refus" in plane.agents["hospital-b"].log_path.read_text().lower(),
        timeout=120,
        what="the revoked site's agent did not report being refused",
        server=plane.server,
    )
    assert _connection(plane, "hospital-a") == "online"
