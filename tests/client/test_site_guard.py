"""The ClientApp under a site directory: the site's policy and ledger decide every round."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from flwr.app import RecordDict

from fedvault.client.app import app
from fedvault.client.ledger import PrivacyLedger
from fedvault.client.policy import default_policy_text
from fedvault.common.protocol import ReplyError
from fedvault.common.run_config import RunSettings
from tests.conftest import site_context, train_message

SETTINGS = RunSettings(
    num_server_rounds=3,
    local_epochs=1,
    batch_size=64,
    target_epsilon=3.0,
    accountant="rdp",
    run_name="study-1",
)


def _site(tmp_path: Path, policy: str) -> dict[str, object]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "site-policy.toml").write_text(policy)
    return {"partition-id": 0, "num-partitions": 3, "site-name": "clinic", "site-dir": str(site)}


def _train(settings: RunSettings, node: dict[str, object], rnd: int):  # type: ignore[no-untyped-def]
    # A fresh context each time: the agent or its SuperNode may have restarted in between.
    return app(train_message(settings, rnd), site_context(settings, node, RecordDict()))


def test_rounds_are_spent_in_the_ledger_and_reported(tmp_path: Path) -> None:
    node = _site(tmp_path, default_policy_text())
    replies = [_train(SETTINGS, node, rnd) for rnd in (1, 2)]
    assert not any(r.has_error() for r in replies)
    metrics = [dict(r.content["metrics"]) for r in replies]
    # Epsilon accumulates across fresh contexts: the ledger, not the process, remembers.
    assert 0 < metrics[0]["epsilon"] < metrics[1]["epsilon"] <= 3.0
    assert metrics[1]["allow-export"] == 0
    ledger = PrivacyLedger(Path(str(node["site-dir"])) / "ledger.sqlite")
    # The dataset's total is measured the site's way: RDP at the policy's max-delta.
    assert metrics[1]["dataset-epsilon"] == pytest.approx(
        ledger.epsilon("digits/partition-0-of-3", delta=1e-3, accountant="rdp")
    )
    assert [s.steps for s in ledger.history("digits/partition-0-of-3", "study-1")] == [
        int(m["steps"]) for m in metrics
    ]


def test_a_budget_that_runs_out_refuses_the_round_with_a_reason(tmp_path: Path) -> None:
    node = _site(tmp_path, "[privacy]\nmax-total-epsilon = 2.5\nmax-run-epsilon = 2.5\n")
    first = _train(SETTINGS, node, 1)
    assert not first.has_error(), first.error.reason
    refused = next(r for r in (_train(SETTINGS, node, rnd) for rnd in (2, 3)) if r.has_error())
    assert refused.error.code == ReplyError.REFUSED
    assert "privacy budget" in refused.error.reason and "2.5" in refused.error.reason
    # A new run on the same dataset cannot spend what is left past the total budget either.
    other = replace(SETTINGS, run_name="study-2")
    later = [_train(other, node, rnd) for rnd in (1, 2, 3)]
    ledger = PrivacyLedger(Path(str(node["site-dir"])) / "ledger.sqlite")
    [status] = ledger.status(budget_delta=1e-3)
    assert status.epsilon <= 2.5 + 1e-9
    assert status.refusals >= 1 + sum(r.has_error() for r in later)


@pytest.mark.parametrize(
    ("policy", "reason"),
    [
        ("[runs]\nallowed-models = ['mlp']\n", "allows models"),
        ("[runs]\nmax-rounds-per-run = 1\n", "rounds per run"),
        ("[privacy]\nmin-noise-multiplier = 50.0\n", "below this site's minimum"),
        ("[runs]\nallowed-projects = ['oncology']\n", "project 'default'"),
    ],
)
def test_policy_refusals_happen_before_any_training(tmp_path: Path, policy: str, reason: str):
    node = _site(tmp_path, policy)
    rnd = 2 if "rounds" in reason else 1
    reply = _train(SETTINGS, node, rnd)
    assert reply.has_error() and reply.error.code == ReplyError.REFUSED
    assert reason in reply.error.reason
    ledger = PrivacyLedger(Path(str(node["site-dir"])) / "ledger.sqlite")
    assert ledger.history("digits/partition-0-of-3") == [], "nothing was spent"


def test_an_invalid_policy_file_is_a_config_error_reply(tmp_path: Path) -> None:
    node = _site(tmp_path, "[privacy]\nmax-delta = 7\n")
    reply = _train(SETTINGS, node, 1)
    assert reply.error.code == ReplyError.CONFIG
    assert "max-delta" in reply.error.reason
