"""A real federation: SuperLink over TLS with node auth, two registered sites, one intruder."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Any

import pytest

from fedvault.common.run_config import RunSettings
from fedvault.server.demo.federation import APP_DIR, LocalFederation, follow_report
from fedvault.server.demo.workspace import Workspace
from fedvault.server.superlink import RunStatus

pytestmark = pytest.mark.e2e


@dataclass
class Outcome:
    status: RunStatus
    events: list[dict[str, Any]]
    intruder_status: int
    intruder_log: str
    intruder_online: bool
    pids: list[int]


def _descendants(pids: list[int]) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        pid, ppid = (int(v) for v in line.split())
        children.setdefault(ppid, []).append(pid)
    found, todo = [], list(pids)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def _alive(pid: int) -> bool:
    out = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True)
    return out.returncode == 0 and not out.stdout.strip().startswith("Z")


@pytest.fixture(scope="module")
def outcome(tmp_path_factory) -> Outcome:
    root = tmp_path_factory.mktemp("federation")
    workspace = Workspace.create(root, sites=3)
    settings = RunSettings(
        num_server_rounds=2, target_epsilon=8.0, min_sites=2, seed=3, wait_timeout=60
    )
    with LocalFederation(workspace) as fed:
        for site in (0, 1):
            fed.register(site)
            fed.start_site(
                site, {"partition-id": site, "num-partitions": 2, "site-name": f"site-{site}"}
            )
        intruder = fed.start_site(2, {"partition-id": 0, "num-partitions": 2})  # never registered
        fed.wait_online(2)
        pids = _descendants([fed.superlink.process.pid, *(p.pid for p in fed.supernodes.values())])
        report = root / "report.jsonl"
        run_id = fed.superlink.start_run(
            APP_DIR, settings.to_run_config() | {"report-path": str(report)}
        )
        status, events = follow_report(
            fed.superlink, run_id, report, on_event=lambda e: None, timeout=400
        )
        intruder_status = intruder.wait(timeout=60)
        online = {n.name for n in fed.superlink.nodes() if n.status == "online"}
        pids = sorted(set(pids) | set(_descendants(pids)))
    return Outcome(
        status, events, intruder_status, intruder.log_path.read_text(), "site-2" in online, pids
    )


def test_run_completes_with_accuracy_well_above_chance(outcome):
    assert outcome.status.sub_status == "completed", outcome.status.details
    finished = next(e for e in outcome.events if e["event"] == "finished")
    assert finished["accuracy"] > 0.5  # ten classes: chance is 0.1


def test_every_round_reports_cumulative_epsilon_per_site(outcome):
    rounds = [e for e in outcome.events if e["event"] == "round"]
    assert [r["round"] for r in rounds] == [1, 2]
    by_site = {}
    for r in rounds:
        assert {s["site"] for s in r["sites"]} == {"site-0", "site-1"}
        for s in r["sites"]:
            by_site.setdefault(s["site"], []).append(s["epsilon"])
    for eps in by_site.values():
        assert 0 < eps[0] < eps[1] <= 8.0


def test_unregistered_site_is_refused(outcome):
    assert outcome.intruder_status != 0
    assert "Failed to activate SuperNode" in outcome.intruder_log or "305" in outcome.intruder_log
    assert not outcome.intruder_online


def test_no_process_is_left_running(outcome):
    assert len(outcome.pids) >= 3
    leftovers = [pid for pid in outcome.pids if _alive(pid)]
    described = (
        subprocess.run(
            ["ps", "-o", "pid=,stat=,args=", "-p", ",".join(map(str, leftovers))],
            capture_output=True,
            text=True,
        ).stdout
        if leftovers
        else ""
    )
    assert leftovers == [], described
