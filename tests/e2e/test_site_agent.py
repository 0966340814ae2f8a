"""Site agents driven through `fedvault site`, against a real SuperLink that restarts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits

from fedvault.common.processes import ManagedProcess
from fedvault.common.run_config import RunSettings
from fedvault.server.core.settings import DATA_DIR_ENV, ServerSettings
from fedvault.server.demo.federation import APP_DIR, follow_report
from fedvault.server.demo.workspace import Workspace
from fedvault.server.serve.datadir import init_data_dir
from fedvault.server.serve.superlink import SuperLink

pytestmark = pytest.mark.e2e

FEDVAULT = str(Path(sys.executable).parent / "fedvault")
SETTINGS = RunSettings(
    num_server_rounds=2, local_epochs=1, target_epsilon=3.0, min_sites=2, wait_timeout=90
)
TIGHT = "[privacy]\nmax-total-epsilon = 3.5\nmax-run-epsilon = 3.5\n"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FEDVAULT, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )


def _run(link: SuperLink, root: Path, name: str) -> list[dict[str, Any]]:
    report = root / f"{name}.jsonl"
    run_id = link.start_run(APP_DIR, SETTINGS.to_run_config() | {"report-path": str(report)})
    status, events = follow_report(link, run_id, report, on_event=lambda e: None, timeout=400)
    assert status.sub_status == "completed", (status.details, events[-1:])
    return events


@pytest.fixture(scope="module")
def federation(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("agents")
    workspace = Workspace.create(root / "server", sites=0)
    data_dir = root / "server" / "data"
    init_data_dir(ServerSettings(data_dir=data_dir))
    link = SuperLink(
        workdir=root / "server" / "superlink",
        ca=workspace.ca,
        cert=workspace.cert,
        key=workspace.key,
        host="127.0.0.1",
        port=_port(),
        env={DATA_DIR_ENV: str(data_dir)},
    )
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    agents: list[ManagedProcess] = []
    sites = {}
    link.start()
    try:
        for i, name in enumerate(("site-a", "site-b")):
            site_dir = root / name
            init = _cli("site", "init", "--site-dir", str(site_dir), "--name", name)
            assert init.returncode == 0, init.stderr
            if name == "site-b":
                (site_dir / "site-policy.toml").write_text(TIGHT)
            link.register_node((site_dir / "node.key.pub").read_bytes(), name=name)
            data = root / f"{name}.npz"
            np.savez(data, x=x[i::2], y=digits.target[i::2].astype(np.int64))
            agents.append(
                ManagedProcess(
                    f"agent {name}",
                    [
                        FEDVAULT,
                        "site",
                        "run",
                        "--server",
                        link.address,
                        "--ca",
                        str(workspace.ca),
                        "--data",
                        str(data),
                        "--site-dir",
                        str(site_dir),
                        "--name",
                        name,
                        "--restart-delay",
                        "1",
                    ],
                    env={**os.environ, "COLUMNS": "200"},
                    log_path=root / f"{name}-agent.log",
                )
            )
            sites[name] = site_dir
        first = _run(link, root, "first")
        # The server goes down and comes back on the same address and database.
        link.stop()
        link.start()
        second = _run(link, root, "second")
    finally:
        for agent in agents:
            agent.stop()
        link.stop()
    return {
        "first": first,
        "second": second,
        "sites": sites,
        "agent_logs": {a.name: a.log_path.read_text() for a in agents},
        "statuses": [a.popen.returncode for a in agents],
    }


def _port() -> int:
    from fedvault.common.processes import free_port

    return free_port()


def _rounds(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "round"]


def test_both_agents_train_the_first_run(federation):
    for r in _rounds(federation["first"]):
        assert {s["site"] for s in r["sites"]} == {"site-a", "site-b"}
        assert not r["refused"] and not r["failed"]


def test_agents_rejoin_a_restarted_server_by_themselves(federation):
    rounds = _rounds(federation["second"])
    assert [r["round"] for r in rounds] == [1, 2]
    assert all("site-a" in {s["site"] for s in r["sites"]} for r in rounds)


def test_a_site_whose_budget_runs_out_refuses_and_the_run_goes_on(federation):
    rounds = _rounds(federation["second"])
    refused = [x for r in rounds for x in r["refused"]]
    assert refused, rounds
    assert all("privacy budget" in x["reason"] for x in refused)
    assert all("site-b" not in {s["site"] for s in r["sites"]} for r in rounds if r["refused"])
    finished = next(e for e in federation["second"] if e["event"] == "finished")
    assert finished["accuracy"] > 0.2  # ten classes: chance is 0.1


def test_site_status_shows_spend_within_budget_and_the_refusals(federation):
    out = _cli("site", "status", "--site-dir", str(federation["sites"]["site-b"]))
    assert out.returncode == 0, out.stderr
    assert "Recent refusals" in out.stdout and "budget" in out.stdout.split("Recent refusals")[1]
    spent = next(ln for ln in out.stdout.splitlines() if "site-b.npz" in ln)
    assert float(spent.split("│")[2]) <= 3.5


def test_agents_say_what_they_do_and_stop_cleanly(federation):
    log = federation["agent_logs"]["agent site-b"]
    assert "Connecting to" in log and "Refused round" in log
    assert "Traceback" not in log
