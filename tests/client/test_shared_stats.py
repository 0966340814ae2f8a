"""Shared feature statistics at a site: released once, charged in the epsilon and the ledger."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import dp_accounting
import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MessageType, RecordDict

from fedvault.client.app import app
from fedvault.client.ledger import PrivacyLedger
from fedvault.client.policy import default_policy_text
from fedvault.common.protocol import ReplyError
from fedvault.common.run_config import RunSettings
from tests.conftest import flower_message, site_context, train_message

SETTINGS = RunSettings(
    dataset="breast_cancer",
    model="linear",
    num_server_rounds=2,
    local_epochs=2,
    batch_size=32,
    momentum=0.0,
    learning_rate=0.5,
    target_epsilon=3.0,
    accountant="rdp",
    feature_transform="log",
    feature_stats_noise=4.0,
    feature_stats_clip=20.0,
    run_name="study-7",
)
NODE = {"partition-id": 0, "num-partitions": 3, "site-name": "clinic", "insecure-no-ledger": True}
DATASET = "breast_cancer/partition-0-of-3"


def _query(settings: RunSettings, node, state: RecordDict):  # type: ignore[no-untyped-def]
    msg = flower_message(
        RecordDict({"config": ConfigRecord({"server-round": 0})}), message_type=MessageType.QUERY
    )
    return app(msg, site_context(settings, node, state))


def _train(settings: RunSettings, node, state: RecordDict, rnd: int, center=None):  # type: ignore[no-untyped-def]
    msg = train_message(settings, rnd)
    if center is not None:
        msg.content["feature-scaling"] = ArrayRecord({"center": Array(center)})
    return app(msg, site_context(settings, node, state))


def _center(reply) -> np.ndarray:  # type: ignore[no-untyped-def]
    total = reply.content["feature-sum"]["sum"].numpy()
    return (total / reply.content["metrics"]["num-examples"]).astype(np.float32)


def _independent_epsilon(history, delta):  # type: ignore[no-untyped-def]
    """Epsilon from Google's dp_accounting RDP accountant (a Gaussian at q=1 included)."""
    accountant = dp_accounting.rdp.RdpAccountant()
    for sigma, q, steps in history:
        event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))
        accountant.compose(event, steps)
    return accountant.get_epsilon(delta)


def test_release_costs_epsilon_and_training_fits_in_what_is_left() -> None:
    state = RecordDict()
    released = _query(SETTINGS, NODE, state)
    assert not released.has_error(), released.error.reason
    stats = dict(released.content["metrics"])
    assert stats["epsilon"] > 0
    assert released.content["feature-sum"]["sum"].numpy().shape == (30,)
    center = _center(released)
    rounds = [dict(_train(SETTINGS, NODE, state, rnd, center).content["metrics"]) for rnd in (1, 2)]
    last = rounds[-1]
    # The whole run, release included, lands on the target and never above.
    assert 2.9 < last["epsilon"] <= 3.0 + 1e-9
    history = [(SETTINGS.feature_stats_noise, 1.0, 1)] + [
        (r["noise-multiplier"], r["sample-rate"], int(r["steps"])) for r in rounds
    ]
    assert _independent_epsilon(history, last["delta"]) == pytest.approx(last["epsilon"], abs=0.05)
    # Without the release, the same target would leave DP-SGD less noise.
    without = replace(SETTINGS, feature_stats_noise=0.0)
    plain = dict(_train(without, NODE, RecordDict(), 1).content["metrics"])
    assert plain["noise-multiplier"] < rounds[0]["noise-multiplier"]


def test_a_second_release_in_the_same_run_is_refused() -> None:
    state = RecordDict()
    assert not _query(SETTINGS, NODE, state).has_error()
    again = _query(SETTINGS, NODE, state)
    assert again.has_error()
    assert again.error.code == ReplyError.REFUSED
    assert "once per run" in again.error.reason


def test_training_without_the_shared_scaling_is_refused() -> None:
    state = RecordDict()
    assert not _query(SETTINGS, NODE, state).has_error()
    reply = _train(SETTINGS, NODE, state, 1)
    assert reply.has_error()
    assert reply.error.code == ReplyError.CONFIG
    assert "shared statistics" in reply.error.reason


def _site(tmp_path: Path, policy: str) -> dict[str, object]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "site-policy.toml").write_text(policy)
    return {"partition-id": 0, "num-partitions": 3, "site-name": "clinic", "site-dir": str(site)}


def test_release_is_charged_in_the_site_ledger(tmp_path: Path) -> None:
    node = _site(tmp_path, default_policy_text())
    released = _query(SETTINGS, node, RecordDict())
    assert not released.has_error(), released.error.reason
    ledger = PrivacyLedger(Path(str(node["site-dir"])) / "ledger.sqlite")
    [step] = ledger.history(DATASET, "study-7")
    assert (step.noise_multiplier, step.sample_rate, step.steps) == (4.0, 1.0, 1)
    assert ledger.trained_rounds(DATASET, "study-7") == 0
    # Training afterwards (fresh contexts) composes the release in the run's epsilon.
    center = _center(released)
    reply = _train(SETTINGS, node, RecordDict(), 1, center)
    assert not reply.has_error(), reply.error.reason
    metrics = dict(reply.content["metrics"])
    assert metrics["epsilon"] == pytest.approx(
        ledger.epsilon(DATASET, run_id="study-7", delta=metrics["delta"], accountant="rdp")
    )
    assert len(ledger.history(DATASET, "study-7")) == 2
    assert ledger.trained_rounds(DATASET, "study-7") == 1


def test_a_budget_too_small_for_the_release_refuses_it(tmp_path: Path) -> None:
    node = _site(tmp_path, "[privacy]\nmax-run-epsilon = 0.1\nmax-total-epsilon = 0.1\n")
    reply = _query(SETTINGS, node, RecordDict())
    assert reply.has_error()
    assert reply.error.code == ReplyError.REFUSED
    assert "per-run limit" in reply.error.reason
    ledger = PrivacyLedger(Path(str(node["site-dir"])) / "ledger.sqlite")
    assert ledger.history(DATASET) == []


def test_a_release_that_leaves_no_budget_for_training_is_a_privacy_error() -> None:
    greedy = replace(SETTINGS, feature_stats_noise=0.3)
    state = RecordDict()
    assert not _query(greedy, NODE, state).has_error()
    reply = _train(greedy, NODE, state, 1, np.zeros(30, np.float32))
    assert reply.has_error()
    assert reply.error.code == ReplyError.PRIVACY
    assert "nothing is left for DP-SGD" in reply.error.reason
