"""Round 0 of a run with shared feature statistics: sites release, the server combines."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest
from flwr.app import Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedvault.client.app import app
from fedvault.client.site_data import load_site_data
from fedvault.common.errors import FederationError
from fedvault.common.run_config import RunSettings
from fedvault.server.federation.checkpoints import SitePrivacy, record_round
from fedvault.server.federation.feature_stats import collect_feature_stats, with_scaling
from tests.conftest import site_context

SETTINGS = RunSettings(
    dataset="breast_cancer",
    model="linear",
    num_server_rounds=2,
    batch_size=32,
    target_epsilon=3.0,
    accountant="rdp",
    feature_transform="log",
    feature_stats_noise=0.5,
    feature_stats_clip=20.0,
    min_sites=3,
)


@pytest.fixture(autouse=True)
def _as_the_serverapp(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages built outside Flower's runtime need the task's run and node ids."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def _node(i: int, *, secure_ok: bool = True) -> dict[str, object]:
    node: dict[str, object] = {"partition-id": i, "num-partitions": 3, "site-name": f"site-{i}"}
    if secure_ok:
        node["insecure-no-ledger"] = True
    return node


class InProcessGrid:
    """Hands each message to the real ClientApp of the node it is addressed to."""

    def __init__(self, nodes: dict[int, dict[str, object]]):
        self.nodes = nodes

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float) -> list[Message]:
        replies = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            reply = app(msg, site_context(SETTINGS, self.nodes[node]))
            reply.metadata.__dict__["_src_node_id"] = node
            replies.append(reply)
        return replies


def test_the_shared_centre_is_the_noisy_mean_of_every_site() -> None:
    grid = InProcessGrid({1: _node(0), 2: _node(1), 3: _node(2)})
    scaling, released = collect_feature_stats(grid, SETTINGS, grid.get_node_ids())  # type: ignore[arg-type]
    shape, classes = SETTINGS.model_io()
    sites = [
        load_site_data(n, SETTINGS, input_shape=shape, num_classes=classes)
        for n in grid.nodes.values()
    ]
    exact = np.concatenate([s.features for s in sites]).mean(axis=0)
    assert scaling.center.shape == (30,)
    assert np.abs(scaling.center - exact).max() < 0.5
    assert {s["site"] for s in released.sites} == {"site-0", "site-1", "site-2"}
    # The release enters each site's lineage record and its recomputed epsilon.
    records: dict[str, SitePrivacy] = {}
    record_round(records, released)
    record = records["site-0"].to_record("rdp")
    assert record["history"] == [[0.5, 1.0, 1]]
    assert record["epsilon"] == pytest.approx(released.sites[0]["epsilon"], rel=1e-6)


def test_training_messages_carry_the_shared_centre() -> None:
    grid = InProcessGrid({1: _node(0), 2: _node(1), 3: _node(2)})
    scaling, _ = collect_feature_stats(grid, SETTINGS, grid.get_node_ids())  # type: ignore[arg-type]
    outgoing = Message(content=RecordDict(), dst_node_id=1, message_type="train")
    [msg] = with_scaling([outgoing], scaling)
    assert np.array_equal(msg.content["feature-scaling"]["center"].numpy(), scaling.center)


def test_too_few_sites_releasing_stops_the_run_before_training() -> None:
    grid = InProcessGrid({1: _node(0), 2: _node(1), 3: _node(2, secure_ok=False)})
    with pytest.raises(FederationError, match="2 of the 3 required sites"):
        collect_feature_stats(grid, SETTINGS, grid.get_node_ids())  # type: ignore[arg-type]
