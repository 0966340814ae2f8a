"""A server killed mid-run and restarted continues from its last stored round."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from flwr.app import ArrayRecord

from fedvault.common.errors import FederationError
from fedvault.common.processes import descendants
from fedvault.common.run_config import RunSettings
from fedvault.server.core.settings import ServerSettings
from fedvault.server.demo.federation import APP_DIR, LocalFederation, follow_report
from fedvault.server.demo.workspace import Workspace
from fedvault.server.federation.checkpoints import starting_point
from fedvault.server.serve.datadir import init_data_dir
from fedvault.server.store.from_settings import open_store
from tests.e2e._federation import enrol_site

pytestmark = pytest.mark.e2e

ROUNDS = 3
SETTINGS = RunSettings(
    num_server_rounds=ROUNDS,
    local_epochs=1,
    target_epsilon=8.0,
    min_sites=2,
    seed=5,
    wait_timeout=60,
    run_name="resume-me",
)


def _events(report: Path) -> list[dict[str, Any]]:
    if not report.exists():
        return []
    return [json.loads(line) for line in report.read_text().splitlines() if line.endswith("}")]


def _federation(root: Path, data_dir: Path) -> LocalFederation:
    # The same workspace both times: the sites keep their keys, policies and ledgers.
    workspace = Workspace.create(root, sites=2)
    fed = LocalFederation(workspace, data_dir=data_dir)
    fed.__enter__()
    for site in (0, 1):
        # Room for the rounds the crash makes the sites train twice.
        (workspace.site_dir(site) / "site-policy.toml").write_text(
            "[privacy]\nmax-total-epsilon = 30.0\nmax-run-epsilon = 30.0\n"
        )
        enrol_site(fed, workspace, site, partitions=2)
    fed.wait_online(2)
    return fed


@pytest.fixture(scope="module")
def resumed(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("resume")
    data_dir = root / "server-data"
    init_data_dir(ServerSettings(data_dir=data_dir))
    first_report, second_report = root / "first.jsonl", root / "second.jsonl"

    fed = _federation(root / "federation", data_dir)
    try:
        fed.superlink.start_run(
            APP_DIR, SETTINGS.to_run_config() | {"report-path": str(first_report)}
        )
        deadline = time.monotonic() + 300
        while not any(e["event"] == "stored" for e in _events(first_report)):
            assert time.monotonic() < deadline, "first round was never stored"
            time.sleep(0.5)
        # Kill the server hard: the SuperLink and every process under it (the ServerApp).
        assert fed.superlink.process is not None
        victims = [fed.superlink.process.pid, *descendants(fed.superlink.process.pid)]
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        fed.superlink.process.popen.wait(timeout=30)
    finally:
        fed.close()
    killed_after = [e["round"] for e in _events(first_report) if e["event"] == "stored"]

    # A new server process: fresh SuperLink state; the model store is what carries over.
    shutil.rmtree(root / "federation" / "superlink")
    fed = _federation(root / "federation", data_dir)
    try:
        run_id = fed.superlink.start_run(
            APP_DIR, SETTINGS.to_run_config() | {"report-path": str(second_report)}
        )
        status, events = follow_report(
            fed.superlink, run_id, second_report, on_event=lambda e: None, timeout=400
        )
    finally:
        fed.close()
    store = open_store(ServerSettings(data_dir=data_dir))
    return {
        "killed_after": killed_after,
        "status": status,
        "events": events,
        "versions": store.versions("digits-cnn"),
        "data_dir": data_dir,
    }


def test_the_killed_run_stored_at_least_one_round_but_not_all(resumed):
    assert resumed["killed_after"] and max(resumed["killed_after"]) < ROUNDS


def test_restarted_run_resumes_after_its_last_stored_round(resumed):
    assert resumed["status"].sub_status == "completed", resumed["status"].details
    last_stored = max(resumed["killed_after"])
    events = resumed["events"]
    assert next(e for e in events if e["event"] == "resumed")["round"] == last_stored
    rounds = [e["round"] for e in events if e["event"] == "round"]
    assert rounds == list(range(last_stored + 1, ROUNDS + 1))


def test_the_stored_chain_has_exactly_the_rounds_of_an_uninterrupted_run(resumed):
    versions = resumed["versions"]
    assert [v.round for v in versions] == list(range(1, ROUNDS + 1))
    assert all(v.run_id == "resume-me" for v in versions)
    for prev, cur in itertools.pairwise(versions):
        assert (cur.parent_model_id, cur.parent_version) == ("digits-cnn", prev.version)
    final = versions[-1]
    for site in final.sites:
        # The whole run's spend across the restart, recomputed from the stored rounds...
        assert site["rounds"] == list(range(1, ROUNDS + 1))
        assert site["epsilon"] > 0
        # ...which the site's own ledger also counts, plus any round lost in the crash.
        assert site["reported-epsilon"] >= site["epsilon"] - 0.01


def test_a_finished_run_refuses_to_run_again(resumed):
    store = open_store(ServerSettings(data_dir=resumed["data_dir"]))
    with pytest.raises(FederationError, match="already finished"):
        starting_point(store, SETTINGS, run_id="resume-me", fresh=ArrayRecord())
