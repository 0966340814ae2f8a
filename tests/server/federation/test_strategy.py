"""The strategy: bad updates are dropped with a reason, the round goes on, waits are bounded."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict

from fedvault.common.errors import FederationError
from fedvault.server.federation.strategy import (
    ValidatingFedAvg,
    aggregate_site_metrics,
    wait_for_sites,
)
from tests.conftest import flower_message

GLOBAL = {"w": np.zeros(4, dtype=np.float32)}


def _strategy():
    s = ValidatingFedAvg(min_sites=1, wait_timeout=1, max_update_norm=10, fraction_evaluate=0)
    s._reference = {k: v.copy() for k, v in GLOBAL.items()}
    return s


def _reply(w, *, n=10, name="site", node=1, eps=1.0, extra=None):
    content = RecordDict(
        {
            "arrays": ArrayRecord({"w": Array(np.asarray(w, dtype=np.float32))}),
            "metrics": MetricRecord(
                {
                    "num-examples": n,
                    "train-loss": 0.5,
                    "epsilon": eps,
                    "delta": 1e-5,
                    "noise-multiplier": 1.1,
                    "sample-rate": 0.1,
                    "steps": 30,
                }
                | (extra or {})
            ),
            "site": ConfigRecord({"name": name}),
        }
    )
    return flower_message(content, src_node_id=node)


def _error_reply(node, reason):
    request = flower_message(RecordDict(), src_node_id=0, dst_node_id=node)
    reply = Message(Error(code=4002, reason=reason), reply_to=request)
    reply.metadata.__dict__["_src_node_id"] = node
    return reply


def test_weighted_average_of_valid_updates():
    arrays, metrics = _strategy().aggregate_train(
        1,
        [
            _reply([1, 1, 1, 1], n=30, name="a", eps=2.0),
            _reply([3, 3, 3, 3], n=10, name="b", eps=5.0),
        ],
    )
    assert np.allclose(arrays["w"].numpy(), 1.5)
    assert metrics["max-epsilon"] == 5.0 and metrics["num-examples"] == 40


def test_poisoned_updates_are_dropped_and_the_round_continues():
    strategy = _strategy()
    replies = [
        _reply([1, 1, 1, 1], name="honest", node=1),
        _reply([np.nan, 0, 0, 0], name="nan-site", node=2),
        _reply([1e6, 0, 0, 0], name="huge-site", node=3),
        _reply([1, 1], name="shape-site", node=4),
        _error_reply(5, "Data file /data/x.csv does not exist"),
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert np.allclose(arrays["w"].numpy(), 1.0)  # only the honest update counts
    log = strategy.rounds[1]
    reasons = {r["site"]: r["reason"] for r in log.rejected}
    assert "NaN" in reasons["nan-site"]
    assert "exceeds the bound" in reasons["huge-site"]
    assert "shape" in reasons["shape-site"]
    assert log.failed[0]["reason"].startswith("Data file")
    assert [s["site"] for s in log.sites] == ["honest"]


def test_round_with_no_valid_update_keeps_the_model():
    arrays, metrics = _strategy().aggregate_train(1, [_reply([np.inf, 0, 0, 0])])
    assert arrays is None and metrics is None


def test_reply_without_example_count_is_dropped():
    strategy = _strategy()
    bad = _reply([1, 1, 1, 1], n=0)
    arrays, _ = strategy.aggregate_train(1, [bad])
    assert arrays is None
    assert "num-examples must be a positive number" in strategy.rounds[1].rejected[0]["reason"]


class _Grid:
    def __init__(self, nodes):
        self.nodes = nodes

    def get_node_ids(self):
        return list(self.nodes)


def test_waiting_for_sites_is_bounded_with_a_clear_error():
    with pytest.raises(
        FederationError, match=r"Only 1 of the 3 required sites connected within 0\.3 s"
    ):
        wait_for_sites(_Grid([11]), minimum=3, timeout=0.3, poll=0.05)
    assert wait_for_sites(_Grid([1, 2, 3]), minimum=3, timeout=0.3) == [1, 2, 3]


def test_site_metrics_report_worst_case_epsilon():
    recs = [_reply([0] * 4, n=1, eps=1.0).content, _reply([0] * 4, n=3, eps=3.0).content]
    out = aggregate_site_metrics(recs, "num-examples")
    assert out["max-epsilon"] == 3.0
    assert out["train-loss"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"delta": 0.0}, "'delta' must be in (0, 1)"),
        ({"sample-rate": 5.0}, "'sample-rate' must be in (0, 1]"),
        ({"steps": -10}, "'steps' must be a whole number"),
        ({"noise-multiplier": 0.0}, "'noise-multiplier' must be a finite number > 0"),
        ({"epsilon": float("nan")}, "'epsilon' must be a finite number"),
    ],
)
def test_updates_with_impossible_privacy_figures_are_dropped(extra, reason):
    strategy = _strategy()
    arrays, _ = strategy.aggregate_train(1, [_reply([1, 1, 1, 1], extra=extra)])
    assert arrays is None
    assert reason in strategy.rounds[1].rejected[0]["reason"]
