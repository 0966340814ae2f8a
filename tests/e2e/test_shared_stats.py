"""Shared feature statistics over real Flower processes: round 0 releases, then training."""

from __future__ import annotations

import pytest

from fedvault.common.run_config import RunSettings
from fedvault.server.core.settings import ServerSettings
from fedvault.server.demo.federation import APP_DIR, LocalFederation, follow_report
from fedvault.server.demo.workspace import Workspace
from fedvault.server.serve.datadir import init_data_dir
from fedvault.server.store.from_settings import open_store
from tests.e2e._federation import enrol_site

pytestmark = pytest.mark.e2e


def test_sites_release_their_sums_once_and_the_run_stays_within_target(tmp_path) -> None:
    """Both sites answer the round-0 query through the SuperLink, the release is charged
    with the training rounds, and no site's epsilon passes the target."""
    workspace = Workspace.create(tmp_path, sites=2)
    settings = RunSettings(
        num_server_rounds=1,
        target_epsilon=4.0,
        min_sites=2,
        seed=5,
        wait_timeout=60,
        model="linear",
        feature_transform="log",
        feature_stats_noise=3.0,
        feature_stats_clip=40.0,
    )
    data_dir = tmp_path / "server-data"
    init_data_dir(ServerSettings(data_dir=data_dir))
    with LocalFederation(workspace, data_dir=data_dir) as fed:
        for site in (0, 1):
            enrol_site(fed, workspace, site, partitions=2)
        fed.wait_online(2)
        report = tmp_path / "report.jsonl"
        run_id = fed.superlink.start_run(
            APP_DIR, settings.to_run_config() | {"report-path": str(report)}
        )
        status, events = follow_report(
            fed.superlink, run_id, report, on_event=lambda e: None, timeout=400
        )
    assert status.sub_status == "completed", status.details
    released = next(e for e in events if e["event"] == "feature-stats")
    assert sorted(s["site"] for s in released["sites"]) == ["site-0", "site-1"]
    assert not released["refused"]
    finished = next(e for e in events if e["event"] == "finished")
    assert finished["accuracy"] > 0.5
    final = open_store(ServerSettings(data_dir=data_dir)).get("digits-linear")
    for site in final.sites:
        assert site["rounds"] == [0, 1]
        assert 0 < site["epsilon"] <= 4.0
