"""Compliance reports on a seeded log: model access, a principal's actions, denials."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine

from fedvault.common.errors import ConfigError
from fedvault.server.audit import AuditLog, actor_activity, denied_actions, who_accessed
from tests.server.audit.factories import T0


def _minute(n: int) -> str:
    return (T0 + timedelta(minutes=n - 1)).strftime("%Y-%m-%dT%H:%M:%S.000000Z")


def test_who_accessed_a_model_covers_all_its_versions_and_no_other_model(
    seeded: AuditLog, engine: Engine
) -> None:
    rows = who_accessed(engine, "digits-cnn")
    assert [(r.actor, r.action, r.outcome, r.events, r.first, r.last) for r in rows] == [
        ("alice", "model.pull", "allowed", 2, _minute(1), _minute(3)),
        ("bob", "model.pull", "denied", 1, _minute(2), _minute(2)),
        ("carol", "model.pull", "failed", 1, _minute(7), _minute(7)),
    ]
    assert all(r.actor_type == "user" for r in rows)


def test_who_accessed_one_version(seeded: AuditLog, engine: Engine) -> None:
    rows = who_accessed(engine, "credit-mlp:1")
    assert [(r.actor, r.outcome) for r in rows] == [("bob", "denied"), ("carol", "allowed")]
    assert who_accessed(engine, "credit-mlp:2") == []


@pytest.mark.parametrize("ref", ["", "../x", "digits-cnn:0", "digits-cnn:one"])
def test_bad_model_references_are_clear_errors(seeded: AuditLog, engine: Engine, ref: str) -> None:
    with pytest.raises(ConfigError, match="Invalid"):
        who_accessed(engine, ref)


def test_everything_a_principal_did(seeded: AuditLog, engine: Engine) -> None:
    rows = actor_activity(engine, "bob")
    assert [(r.action, r.resource_type, r.outcome, r.events) for r in rows] == [
        ("model.pull", "model", "denied", 2),
        ("auth.login", "user", "denied", 1),
    ]
    late = actor_activity(engine, "alice", since=T0 + timedelta(minutes=4))
    assert [(r.action, r.events) for r in late] == [("key.rotate", 1), ("model.pull", 1)]


def test_denied_actions_in_a_window(seeded: AuditLog, engine: Engine) -> None:
    rows = denied_actions(engine, since=T0 + timedelta(minutes=2), until=T0 + timedelta(hours=1))
    assert [(r.actor, r.action, r.resource_id, r.policy, r.events) for r in rows] == [
        ("bob", "model.pull", "credit-mlp:1", "policy-set:abc", 1),
        ("bob", "auth.login", "bob", "policy-set:abc", 1),
    ]
    assert len(denied_actions(engine)) == 3, "no window: all time"
    with pytest.raises(ConfigError, match="time window is empty"):
        denied_actions(engine, since=T0, until=T0)
