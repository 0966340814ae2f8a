"""The ClientApp as a SuperNode calls it: DP training, cumulative epsilon, clean refusals."""

from __future__ import annotations

import logging

import dp_accounting
import pytest
from flwr.app import MessageType, RecordDict

from fedvault.client.app import app
from fedvault.common.protocol import ReplyError
from fedvault.common.run_config import RunSettings
from tests.conftest import site_context, train_message

NODE = {
    "partition-id": 0,
    "num-partitions": 3,
    "site-name": "hospital-a",
    "insecure-no-ledger": True,
}


def independent_epsilon(history, delta):
    """Epsilon from Google's dp_accounting RDP accountant, not Opacus's."""
    accountant = dp_accounting.rdp.RdpAccountant()
    for sigma, q, steps in history:
        event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))
        accountant.compose(event, steps)
    return accountant.get_epsilon(delta)


def test_epsilon_accumulates_over_rounds_and_matches_an_independent_accountant(fast_settings):
    state = RecordDict()
    replies = []
    for rnd in (1, 2):
        reply = app(train_message(fast_settings, rnd), site_context(fast_settings, NODE, state))
        assert not reply.has_error(), reply.error.reason
        replies.append(dict(reply.content["metrics"]))
    first, second = replies
    assert second["epsilon"] > first["epsilon"] > 0
    assert second["total-steps"] == first["steps"] + second["steps"]
    # The run's whole budget is the target: the last round lands on it, never above.
    assert second["epsilon"] <= 4.0 + 1e-9
    assert second["epsilon"] > 3.8
    history = [(r["noise-multiplier"], r["sample-rate"], int(r["steps"])) for r in replies]
    assert independent_epsilon(history, second["delta"]) == pytest.approx(
        second["epsilon"], abs=0.05
    )
    assert second["delta"] < 1 / second["num-examples"]


def test_reply_carries_weights_and_site_name(fast_settings):
    reply = app(train_message(fast_settings, 1), site_context(fast_settings, NODE))
    assert reply.content["site"]["name"] == "hospital-a"
    sent = train_message(fast_settings, 1).content["arrays"]
    assert set(reply.content["arrays"].keys()) == set(sent.keys())


def test_same_seed_same_update(fast_settings):
    start = train_message(fast_settings, 1).content["arrays"]
    a = app(train_message(fast_settings, 1, start), site_context(fast_settings, NODE))
    b = app(train_message(fast_settings, 1, start), site_context(fast_settings, NODE))
    other = fast_settings.to_run_config() | {"seed": 7}
    ctx = site_context(fast_settings, NODE)
    ctx.run_config = other
    c = app(train_message(fast_settings, 1, start), ctx)
    wa, wb = a.content["arrays"].to_torch_state_dict(), b.content["arrays"].to_torch_state_dict()
    assert all((wa[k] == wb[k]).all() for k in wa)
    wc = c.content["arrays"].to_torch_state_dict()
    assert not all((wa[k] == wc[k]).all() for k in wa)


def test_missing_data_file_is_an_error_reply_and_named_in_the_site_log(
    fast_settings, tmp_path, caplog
):
    node = {"data-path": str(tmp_path / "records.csv"), "insecure-no-ledger": True}
    with caplog.at_level(logging.ERROR, logger="fedvault.client"):
        reply = app(train_message(fast_settings, 1), site_context(fast_settings, node))
    assert reply.has_error()
    assert reply.error.code == ReplyError.DATA
    assert "site's log has the details" in reply.error.reason
    assert "records.csv" not in reply.error.reason, "local paths stay at the site"
    assert "records.csv does not exist" in caplog.text
    assert "Traceback" not in reply.error.reason


def test_data_that_does_not_fit_the_model_is_refused(fast_settings, tmp_path, caplog):
    csv = tmp_path / "site.csv"
    csv.write_text("a,b,label\n1,2,0\n3,4,1\n")
    node = {"data-path": str(csv), "insecure-no-ledger": True}
    with caplog.at_level(logging.ERROR, logger="fedvault.client"):
        reply = app(train_message(fast_settings, 1), site_context(fast_settings, node))
    assert reply.error.code == ReplyError.DATA
    assert "a,b" not in reply.error.reason
    assert "expects (1, 8, 8)" in caplog.text


def test_invalid_privacy_config_is_refused_before_training(fast_settings):
    bad = fast_settings.to_run_config() | {"max-grad-norm": -1.0}
    ctx = site_context(fast_settings, NODE)
    ctx.run_config = bad
    reply = app(train_message(fast_settings, 1), ctx)
    assert reply.error.code == ReplyError.PRIVACY
    assert "max-grad-norm must be a positive number" in reply.error.reason


def test_evaluate_reports_accuracy_on_the_site_test_split(fast_settings):
    reply = app(
        train_message(fast_settings, 1, message_type=MessageType.EVALUATE),
        site_context(fast_settings, NODE),
    )
    metrics = reply.content["metrics"]
    assert 0.0 <= metrics["eval-accuracy"] <= 1.0 and metrics["num-examples"] > 0


def test_tabular_site_csv_trains(tmp_path):
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    rows = [",".join([*(f"f{i}" for i in range(30)), "diagnosis"])]
    rows += [
        ",".join([*(str(v) for v in x), str(y)])
        for x, y in zip(bunch.data, bunch.target, strict=False)
    ]
    csv = tmp_path / "cancer.csv"
    csv.write_text("\n".join(rows) + "\n")
    settings = RunSettings(
        dataset="site-records",
        model="mlp",
        input_shape="30",
        num_classes=2,
        num_server_rounds=1,
        target_epsilon=3.0,
        accountant="rdp",
    )
    node = {"data-path": str(csv), "label-column": "diagnosis", "insecure-no-ledger": True}
    reply = app(train_message(settings, 1), site_context(settings, node))
    assert not reply.has_error(), reply.error.reason
    assert reply.content["metrics"]["num-examples"] == pytest.approx(0.8 * 569, abs=2)


def test_a_supernode_without_a_site_directory_is_refused(fast_settings):
    node = {"partition-id": 0, "num-partitions": 3}
    reply = app(train_message(fast_settings, 1), site_context(fast_settings, node))
    assert reply.error.code == ReplyError.CONFIG
    assert "fedvault site run" in reply.error.reason
