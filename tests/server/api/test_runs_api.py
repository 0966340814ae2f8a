"""Runs through the API: submit, follow state and metrics, stop; projects stay apart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from fedvault.server.api.services import Services
from fedvault.server.federation.app_definition import APP_DIR
from fedvault.server.store.tables import ModelRecord

from .conftest import Headers, MakeUser
from .fake_federation import FakeFederation

RUN = {"rounds": 3, "dataset": "digits", "model": "cnn", "target_epsilon": 4.0, "min_sites": 2}


@pytest.fixture
def federation(services: Services) -> FakeFederation:
    fake = FakeFederation()
    services.federation = fake  # type: ignore[assignment]
    return fake


@pytest.fixture
def alice(make_user: MakeUser) -> Headers:
    """A data scientist in project alpha."""
    return make_user("data_scientist", projects=["alpha"])[1]


@pytest.fixture
def bob(make_user: MakeUser) -> Headers:
    """A data scientist in project beta only."""
    return make_user("data_scientist", projects=["beta"])[1]


def _submit(
    api: TestClient, headers: Headers, project: str = "alpha", **changes: Any
) -> httpx.Response:
    return api.post(f"/v1/projects/{project}/runs", json=RUN | changes, headers=headers)


def _report(services: Services, run_id: str, *events: dict[str, Any]) -> Path:
    path = services.settings.require_data_dir() / "runs" / run_id / "report.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        for event in events:
            fh.write(json.dumps(event, allow_nan=True) + "\n")
    return path


def test_submit_starts_the_flower_app_with_the_checked_config(
    api: TestClient, alice: Headers, federation: FakeFederation, services: Services, audit_events
) -> None:
    answer = _submit(api, alice, name="trial-1")
    assert answer.status_code == 201, answer.text
    run = answer.json()
    assert run["state"] == "running"
    assert run["project"] == "alpha"
    assert run["name"] == "trial-1"
    assert run["created_by"].startswith("data-scientist")
    assert "report-path" not in run["config"]  # a server path stays on the server
    ((app_dir, config),) = federation.started
    assert app_dir == APP_DIR
    assert config["num-server-rounds"] == 3
    assert config["target-epsilon"] == 4.0
    assert config["project"] == "alpha"
    assert config["run-name"] == "trial-1"
    data_dir = services.settings.require_data_dir()
    assert config["report-path"] == str(data_dir / "runs" / run["id"] / "report.jsonl")
    (event,) = audit_events(action="run.create")
    assert event["outcome"] == "allowed"
    assert event["details"]["run_id"] == run["id"]


def test_the_run_name_defaults_to_the_run_id(
    api: TestClient, alice: Headers, federation: FakeFederation
) -> None:
    run = _submit(api, alice).json()
    assert run["name"] == run["id"]
    assert federation.started[0][1]["run-name"] == run["id"]


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"rounds": 0}, "rounds"),
        ({"rounds": "three"}, "rounds"),
        ({"learning_rate": -1}, "learning_rate"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"report_path": "/etc/passwd"}, "report_path"),
        ({"project": "beta"}, "project"),
        ({"name": "Has Spaces"}, "name"),
        ({"model_name": "../escape"}, "model_name"),
        ({"init_from": "model:0"}, "init_from"),
        ({"fraction_evaluate": 2}, "fraction_evaluate"),
    ],
)
def test_bad_run_configs_are_refused_before_anything_starts(
    api: TestClient,
    alice: Headers,
    federation: FakeFederation,
    changes: dict[str, Any],
    words: str,
) -> None:
    answer = api.post("/v1/projects/alpha/runs", json=RUN | changes, headers=alice)
    assert answer.status_code == 422
    assert words in answer.json()["error"]["message"]
    assert federation.started == []


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"dataset": "/data/site.csv"}, "input-shape"),  # a site file: the shape must be given
        ({"model": "transformer"}, "Unknown model"),
        ({"dataset": "breast_cancer", "model": "cnn"}, "images"),
        ({"noise_multiplier": 1.1}, "exactly one"),  # RUN sets a target epsilon too
    ],
)
def test_a_config_the_app_would_refuse_is_refused_by_the_api(
    api: TestClient,
    alice: Headers,
    federation: FakeFederation,
    changes: dict[str, Any],
    words: str,
) -> None:
    answer = _submit(api, alice, **changes)
    assert answer.status_code == 422
    assert words in answer.json()["error"]["message"]
    assert federation.started == []


def test_fixed_noise_instead_of_a_target_epsilon(
    api: TestClient, alice: Headers, federation: FakeFederation
) -> None:
    body = {k: v for k, v in RUN.items() if k != "target_epsilon"} | {"noise_multiplier": 1.1}
    answer = api.post("/v1/projects/alpha/runs", json=body, headers=alice)
    assert answer.status_code == 201, answer.text
    config = federation.started[0][1]
    assert (config["noise-multiplier"], config["target-epsilon"]) == (1.1, 0.0)


def test_a_site_file_dataset_with_its_shape_is_accepted(
    api: TestClient, alice: Headers, federation: FakeFederation
) -> None:
    answer = _submit(
        api, alice, dataset="/data/site.csv", model="mlp", input_shape="30", num_classes=2
    )
    assert answer.status_code == 201, answer.text
    assert federation.started[0][1]["input-shape"] == "30"


def test_without_a_federation_submitting_is_503_and_records_nothing(
    api: TestClient, alice: Headers
) -> None:
    answer = _submit(api, alice)
    assert answer.status_code == 503
    assert "fedvault server start" in answer.json()["error"]["message"]
    assert api.get("/v1/projects/alpha/runs", headers=alice).json() == []


def test_a_refused_start_is_recorded_as_failed(
    api: TestClient, alice: Headers, federation: FakeFederation
) -> None:
    federation.fail = True
    answer = _submit(api, alice)
    assert answer.status_code == 503
    (run,) = api.get("/v1/projects/alpha/runs", headers=alice).json()
    assert run["state"] == "failed"
    assert "did not start" in run["details"]


def test_run_names_are_not_shared(
    api: TestClient, alice: Headers, bob: Headers, federation: FakeFederation
) -> None:
    first = _submit(api, alice, name="trial").json()
    busy = _submit(api, alice, name="trial")
    assert busy.status_code == 409
    assert "still running" in busy.json()["error"]["message"]
    assert _submit(api, bob, "beta", name="trial").status_code == 409
    federation.finish(federation.run_ids[0])
    api.get(f"/v1/runs/{first['id']}", headers=alice)  # notices it finished
    resumed = _submit(api, alice, name="trial")
    assert resumed.status_code == 201  # same project, finished: resumes from its stored rounds


def test_a_model_name_of_another_project_is_refused(
    api: TestClient, alice: Headers, bob: Headers, federation: FakeFederation
) -> None:
    assert _submit(api, alice, model_name="shared").status_code == 201
    taken = _submit(api, bob, "beta", model_name="shared")
    assert taken.status_code == 409
    assert "another project" in taken.json()["error"]["message"]
    assert _submit(api, alice, model_name="shared").status_code == 201


def test_starting_from_another_projects_model_is_refused(
    api: TestClient, alice: Headers, bob: Headers, federation: FakeFederation, services: Services
) -> None:
    with Session(services.engine) as session:
        session.add(ModelRecord(id="secret-model", project="beta", created_by="tests"))
        session.commit()
    refused = _submit(api, alice, init_from="secret-model:1")
    assert refused.status_code == 404
    assert _submit(api, bob, "beta", init_from="secret-model:1").status_code == 201


def test_list_is_per_project_and_newest_first(
    api: TestClient, alice: Headers, bob: Headers, federation: FakeFederation
) -> None:
    ids = [_submit(api, alice).json()["id"] for _ in range(3)]
    _submit(api, bob, "beta")
    listed = [r["id"] for r in api.get("/v1/projects/alpha/runs", headers=alice).json()]
    assert listed == ids[::-1]


def test_other_projects_and_their_runs_answer_404_like_missing_ones(
    api: TestClient, alice: Headers, bob: Headers, federation: FakeFederation
) -> None:
    theirs = _submit(api, bob, "beta").json()
    hidden = api.get(f"/v1/runs/{theirs['id']}", headers=alice)
    missing = api.get("/v1/runs/run-000000000000", headers=alice)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["error"]["code"] == missing.json()["error"]["code"]
    assert api.post(f"/v1/runs/{theirs['id']}/stop", headers=alice).status_code == 404
    assert api.get("/v1/projects/beta/runs", headers=alice).status_code == 404
    assert _submit(api, alice, "beta").status_code == 404
    assert api.get("/v1/projects/nowhere/runs", headers=alice).status_code == 404
    assert len(federation.started) == 1


def test_bad_run_ids_are_422(api: TestClient, alice: Headers) -> None:
    assert api.get("/v1/runs/not-a-run", headers=alice).status_code == 422
    assert api.get("/v1/projects/Bad Project/runs", headers=alice).status_code == 422


def test_reading_a_run_shows_state_and_per_round_metrics(
    api: TestClient, alice: Headers, federation: FakeFederation, services: Services
) -> None:
    run = _submit(api, alice, name="trial").json()
    _report(
        services,
        run["id"],
        {"event": "started", "time": 1.0, "sites": 2, "rounds": 3},
        {"event": "round", "time": 2.0, "round": 1, "accuracy": 0.5, "loss": float("nan")},
        {"event": "stored", "time": 3.0, "round": 1, "model": "digits-cnn:1", "sha256": "ab"},
    )
    path = _report(services, run["id"], {"event": "round", "time": 4.0, "round": 2})
    with path.open("a") as fh:
        fh.write('{"event": "round", "round": 3')  # being written: not read yet
    detail = api.get(f"/v1/runs/{run['id']}", headers=alice).json()
    assert detail["state"] == "running"
    assert [r["round"] for r in detail["rounds"]] == [1, 2]
    assert detail["rounds"][0] == {"round": 1, "accuracy": 0.5, "loss": None}
    assert detail["models"] == ["digits-cnn:1"]
    assert "sha256" not in json.dumps(detail)
    federation.finish(federation.run_ids[0], "completed")
    done = api.get(f"/v1/runs/{run['id']}", headers=alice).json()
    assert done["state"] == "completed"
    assert done["finished_at"] is not None


def test_a_failed_run_reports_why(
    api: TestClient, alice: Headers, federation: FakeFederation, services: Services
) -> None:
    run = _submit(api, alice).json()
    _report(services, run["id"], {"event": "failed", "time": 1.0, "reason": "too few sites"})
    federation.finish(federation.run_ids[0], "failed", "ServerApp exited with code 1")
    detail = api.get(f"/v1/runs/{run['id']}", headers=alice).json()
    assert detail["state"] == "failed"
    assert detail["failure"] == "too few sites"
    assert "exited" in detail["details"]


def test_a_run_the_superlink_forgot_is_failed(
    api: TestClient, alice: Headers, federation: FakeFederation
) -> None:
    run = _submit(api, alice).json()
    federation.statuses.clear()
    detail = api.get(f"/v1/runs/{run['id']}", headers=alice).json()
    assert detail["state"] == "failed"
    assert "no longer knows" in detail["details"]


def test_reading_while_the_federation_is_down_shows_the_stored_state(
    api: TestClient, alice: Headers, federation: FakeFederation, services: Services
) -> None:
    run = _submit(api, alice).json()
    federation.fail = True
    assert api.get(f"/v1/runs/{run['id']}", headers=alice).json()["state"] == "running"
    services.federation = None
    assert api.get(f"/v1/runs/{run['id']}", headers=alice).json()["state"] == "running"


def test_stop_stops_the_flower_run_once(
    api: TestClient, alice: Headers, federation: FakeFederation, audit_events
) -> None:
    run = _submit(api, alice).json()
    stopped = api.post(f"/v1/runs/{run['id']}/stop", headers=alice)
    assert stopped.status_code == 200
    assert stopped.json()["state"] == "stopped"
    assert federation.stopped == federation.run_ids
    again = api.post(f"/v1/runs/{run['id']}/stop", headers=alice)
    assert again.status_code == 200
    assert again.json()["state"] == "stopped"
    assert federation.stopped == federation.run_ids
    events = audit_events(action="run.stop")
    assert [e["details"]["stopped"] for e in events] == [True, False]


def test_stopping_a_finished_run_keeps_its_outcome(
    api: TestClient, alice: Headers, federation: FakeFederation
) -> None:
    run = _submit(api, alice).json()
    federation.finish(federation.run_ids[0], "completed")
    answer = api.post(f"/v1/runs/{run['id']}/stop", headers=alice)
    assert answer.json()["state"] == "completed"
    assert federation.stopped == []


def test_stop_while_the_superlink_is_unreachable_is_503(
    api: TestClient, alice: Headers, federation: FakeFederation
) -> None:
    run = _submit(api, alice).json()
    federation.fail = True
    assert api.post(f"/v1/runs/{run['id']}/stop", headers=alice).status_code == 503
    federation.fail = False
    assert api.get(f"/v1/runs/{run['id']}", headers=alice).json()["state"] == "running"


def test_auditors_and_site_operators_cannot_start_runs(
    api: TestClient, make_user: MakeUser, federation: FakeFederation
) -> None:
    _, auditor = make_user("auditor")
    _, operator = make_user("site_operator")
    make_user("data_scientist", projects=["alpha"])
    assert _submit(api, auditor).status_code == 403  # sees every project: no secret to keep
    assert _submit(api, operator).status_code == 404  # not a member of alpha
    assert federation.started == []
