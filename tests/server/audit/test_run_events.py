"""A ServerApp run's events reach the audit log before they are reported, and feed the
privacy and lineage reports."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from fedvault.common.errors import NotFound, StorageError
from fedvault.server.audit import AuditLog, EventFilter, model_lineage, privacy_spend, query_events
from fedvault.server.audit.run_events import RunAudit
from fedvault.server.core.db import open_database
from fedvault.server.core.settings import ServerSettings
from fedvault.server.federation.report import RunReporter
from fedvault.server.serve.datadir import init_data_dir

CONFIG = {
    "project": "credit",
    "model": "mlp",
    "dataset": "credit",
    "noise-multiplier": 1.1,
    "max-grad-norm": 1.0,
    "target-delta": 1e-5,
    "accountant": "prv",
    "report-path": "/tmp/report.jsonl",
}


def _site(name: str, epsilon: float) -> dict[str, Any]:
    return {
        "site": name,
        "node": 17896160005920236692,  # a real Flower node id: past 2**53
        "epsilon": epsilon,
        "delta": 1e-5,
        "steps": 10,
        "num-examples": 100,
        "train-loss": 0.5,
    }


def _run(reporter: RunReporter, run_id: str, *, parent: str | None, model: str) -> None:
    reporter.emit(
        "started", sites=2, rounds=2, run_id=run_id, first_round=1, parent=parent, config=CONFIG
    )
    reporter.emit(
        "round",
        round=1,
        accuracy=0.8,
        loss=float("nan"),
        sites=[_site("bank-a", 0.5), _site("bank-b", 0.6)],
        rejected=[{"site": "bank-c", "node": 3, "reason": "norm 1e9 > 1000"}],
        failed=[],
    )
    reporter.emit(
        "round",
        round=2,
        accuracy=0.9,
        loss=0.3,
        sites=[_site("bank-a", 0.9), _site("bank-b\x1b[31m", 1.1)],
        rejected=[],
        failed=[{"node": 9, "code": 5000, "reason": "crashed"}],
        refused=[{"node": 2**63 + 10, "reason": "privacy budget exhausted"}],
    )
    reporter.emit("stored", round=2, model=model, sha256="ab" * 32)
    reporter.emit(
        "finished",
        rounds=2,
        run_id=run_id,
        model=model,
        accuracy=0.9,
        loss=0.3,
        epsilon={"bank-a": 0.9},
        run_epsilon={"bank-a": 0.95, "bank-b\x1b[31m": 1.2},
    )


@pytest.fixture
def audited_runs(make_log: Callable[..., AuditLog], engine: Engine, tmp_path: Path) -> Path:
    """Two runs: run-0 stores base:1; run-7 starts from it and stores credit-mlp:3."""
    report = tmp_path / "report.jsonl"
    _run(RunReporter(str(report), audit=RunAudit(make_log)), "run-0", parent=None, model="base:1")
    _run(
        RunReporter(str(report), audit=RunAudit(make_log)),
        "run-7",
        parent="base:1",
        model="credit-mlp:3",
    )
    return report


def test_every_run_event_is_audited_in_order(audited_runs: Path, engine: Engine) -> None:
    page = query_events(engine, EventFilter(project="credit"), limit=100)
    actions = [e["action"] for e in page.events]
    assert actions[:8] == [
        "run.started",
        "run.round",
        "update.rejected",
        "run.round",
        "site.failed",
        "site.refused",
        "model.stored",
        "run.finished",
    ]
    assert len(actions) == 16
    rejected, failed, refused = page.events[2], page.events[4], page.events[5]
    assert (rejected["outcome"], rejected["resource_id"]) == ("denied", "bank-c")
    assert rejected["details"]["reason"] == "norm 1e9 > 1000"
    assert (failed["outcome"], failed["resource_id"]) == ("failed", "node-9")
    assert refused["details"]["reason"] == "privacy budget exhausted"
    first_round = page.events[1]["details"]
    assert first_round["loss"] is None, "NaN is recorded as null"
    assert "train-loss" not in first_round["sites"][0], "only privacy figures are kept"
    assert page.events[0]["details"]["dp"]["noise-multiplier"] == 1.1
    assert "report-path" not in page.events[0]["details"]["dp"]
    assert all(e["actor"] == "server-app" for e in page.events)
    report_lines = [json.loads(x)["event"] for x in audited_runs.read_text().splitlines()]
    assert report_lines.count("round") == 4, "and the report file still gets every event"


def test_privacy_spend_per_site_per_run(audited_runs: Path, engine: Engine) -> None:
    rows = privacy_spend(engine, run_id="run-7")
    assert [(r.site, r.epsilon, r.rounds, r.final) for r in rows] == [
        ("bank-a", 0.95, [1, 2], True),
        ("bank-b", 0.6, [1], False),
        ("bank-b?[31m", 1.2, [2], True),
    ]
    assert {r.run_id for r in privacy_spend(engine)} == {"run-0", "run-7"}
    assert privacy_spend(engine, project="other") == []


def test_lineage_of_a_model_version(audited_runs: Path, engine: Engine) -> None:
    lineage = model_lineage(engine, "credit-mlp:3")
    assert (lineage.run_id, lineage.project, lineage.round) == ("run-7", "credit", 2)
    assert lineage.sha256 == "ab" * 32
    assert lineage.dp["noise-multiplier"] == 1.1 and lineage.dp["accountant"] == "prv"
    assert lineage.sites["bank-a"] == {"epsilon": 0.9, "delta": 1e-5}
    assert [r["round"] for r in lineage.rounds] == [1, 2]
    assert lineage.rounds[0]["rejected"] == 1 and lineage.rounds[1]["refused"] == 1
    assert lineage.parent == "base:1"
    assert [a.ref for a in lineage.ancestors] == ["base:1"]
    assert lineage.ancestors[0].run_id == "run-0"
    with pytest.raises(NotFound, match="no record of credit-mlp:4"):
        model_lineage(engine, "credit-mlp:4")


def test_an_event_that_cannot_be_audited_is_not_reported(tmp_path: Path) -> None:
    def broken() -> AuditLog:
        raise StorageError("the audit database is unreachable")

    report = tmp_path / "report.jsonl"
    reporter = RunReporter(str(report), audit=RunAudit(broken))
    with pytest.raises(StorageError, match="unreachable"):
        reporter.emit("started", sites=2, rounds=1, run_id="r", config={})
    assert not report.exists()


def test_reporter_audits_into_the_configured_data_dir_by_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import fedvault.server.audit.run_events as run_events

    monkeypatch.setattr(run_events, "get_settings", lambda: ServerSettings())
    quiet = RunReporter("")
    quiet.emit("started", sites=1, rounds=1, run_id="r", config={})  # no data dir: no audit
    assert not (tmp_path / "fedvault.db").exists()

    settings = ServerSettings(data_dir=tmp_path)
    init_data_dir(settings)
    monkeypatch.setattr(run_events, "get_settings", lambda: settings)
    reporter = RunReporter("")
    reporter.emit("started", sites=1, rounds=1, run_id="r-9", config={"project": "p"})
    reporter.emit("failed", reason="sites left")
    engine = open_database(settings.resolved_database_url())
    page = query_events(engine, EventFilter(resource_id="r-9"))
    engine.dispose()
    assert [(e["action"], e["outcome"]) for e in page.events] == [
        ("run.started", "allowed"),
        ("run.failed", "failed"),
    ]
    assert RunReporter("", audit=None).audit is None
