"""`fedvault api` against the admin API: each role's everyday calls, and its refusals."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from fedvault.common import api_cli
from fedvault.common.api_client import ApiClient, ApiError
from fedvault.common.cli import build_app

from .conftest import Headers, MakeUser, Store

runner = CliRunner()


class _InProcess(ApiClient):
    """Sends through the test's client of the app, which outlives each command."""

    def close(self) -> None:
        pass


@pytest.fixture
def fedvault(api: TestClient, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """``fedvault(headers, *args)``: run `fedvault api ...` as the holder of ``headers``."""
    holder: dict[str, str] = {}

    def open_client(**_: object) -> ApiClient:
        token = holder["auth"].removeprefix("Bearer ")
        return _InProcess(url="http://127.0.0.1", token=token, client=api)

    monkeypatch.setattr(api_cli, "open_client", open_client)

    def run(headers: Headers, *args: str) -> Result:
        holder["auth"] = headers["Authorization"]
        return runner.invoke(build_app(), ["api", *args])

    return run


def test_an_admin_creates_a_project_and_reads_it_back(fedvault, admin: Headers) -> None:
    made = fedvault(admin, "POST", "/v1/projects", "-f", "id=oncology", "-f", "description=Trials")
    assert made.exit_code == 0, made.output
    assert json.loads(made.stdout)["id"] == "oncology"
    read = fedvault(admin, "GET", "/v1/projects/oncology")
    assert json.loads(read.stdout)["description"] == "Trials"


def test_refusals_read_as_the_apis_message_not_a_traceback(fedvault, make_user: MakeUser) -> None:
    _, dana = make_user("data_scientist", projects=["alpha"])
    denied = fedvault(dana, "POST", "/v1/projects", "-d", '{"id": "beta"}')
    assert denied.exit_code == 1
    assert isinstance(denied.exception, ApiError)
    message = str(denied.exception)
    assert message.startswith("403 ") and "request id" in message
    hidden = fedvault(dana, "GET", "/v1/projects/other")
    assert str(hidden.exception).startswith("404 ")
    invalid = fedvault(dana, "POST", "/v1/projects/alpha/runs", "-F", "rounds=-1")
    assert str(invalid.exception).startswith("422 invalid") and "rounds" in str(invalid.exception)


def test_a_wrong_token_is_a_401_that_says_where_tokens_come_from(fedvault) -> None:
    result = fedvault({"Authorization": "Bearer fvt_wrong"}, "GET", "/v1/me")
    assert result.exit_code == 1 and "401" in str(result.exception)
    assert "FEDVAULT_TOKEN" in str(result.exception)


def test_a_member_downloads_a_model_to_a_private_file(
    fedvault, make_user: MakeUser, store_model: Store, tmp_path: Path
) -> None:
    _, dana = make_user("data_scientist", projects=["alpha"])
    data = os.urandom(2 * 1024 * 1024 + 5)
    store_model("m", data=data)
    target = tmp_path / "m.safetensors"
    result = fedvault(dana, "GET", "/v1/models/m/versions/1/download", "-o", str(target))
    assert result.exit_code == 0, result.output
    assert target.read_bytes() == data
    assert target.stat().st_mode & 0o777 == 0o600


def test_a_refused_download_writes_nothing(
    fedvault, make_user: MakeUser, store_model: Store, tmp_path: Path
) -> None:
    _, dana = make_user("data_scientist", projects=["alpha"])
    store_model("m", exports=(True, False))  # one site forbids export
    downloads = tmp_path / "downloads"
    target = downloads / "m.safetensors"
    result = fedvault(dana, "GET", "/v1/models/m/versions/1/download", "-o", str(target))
    assert str(result.exception).startswith("403 ")
    assert not target.exists() and (not downloads.exists() or not any(downloads.iterdir()))


def test_an_auditor_exports_the_trail_as_csv(fedvault, admin: Headers, make_user: MakeUser) -> None:
    _, audra = make_user("auditor")
    fedvault(admin, "POST", "/v1/projects", "-f", "id=oncology")
    result = fedvault(audra, "GET", "/v1/audit/export?format=csv&action=project.create")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["action"], r["actor"], r["outcome"]) for r in rows] == [
        ("project.create", "root", "allowed")
    ]
