"""Factories shared by the audit tests: events, a fake clock, a seeded history, an intruder."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


class FakeClock:
    """Each reading is one minute after the previous one, from T0."""

    def __init__(self) -> None:
        self.now = T0 - timedelta(minutes=1)

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


def event(**overrides: Any) -> dict[str, Any]:
    """A plausible event; override any field."""
    return {
        "actor": "alice",
        "actor_type": "user",
        "action": "model.pull",
        "resource_type": "model",
        "resource_id": "digits-cnn:1",
        "outcome": "allowed",
        "project": "mnist",
        "policy": "policy-set:abc",
        "source": "10.0.0.7",
        "request_id": "req-1",
        "details": {"bytes": 1024},
    } | overrides


# (actor, action, resource_type, resource_id, project, outcome) of the seeded history;
# event N (from 1) is at T0 + (N - 1) minutes.
SEEDED = [
    ("alice", "model.pull", "model", "digits-cnn:1", "mnist", "allowed"),
    ("bob", "model.pull", "model", "digits-cnn:1", "mnist", "denied"),
    ("alice", "model.pull", "model", "digits-cnn:2", "mnist", "allowed"),
    ("carol", "run.submit", "run", "run-1", "credit", "allowed"),
    ("bob", "model.pull", "model", "credit-mlp:1", "credit", "denied"),
    ("alice", "key.rotate", "kek", "v1", None, "allowed"),
    ("carol", "model.pull", "model", "digits-cnn", "mnist", "failed"),
    ("bob", "auth.login", "user", "bob", None, "denied"),
    ("alice", "model.pull", "model", "digits-cnn-2:1", "mnist", "allowed"),
    ("carol", "model.pull", "model", "credit-mlp:1", "credit", "allowed"),
]


def drop_triggers(engine: Engine) -> None:
    """What an intruder with database access does first: remove the append-only guard."""
    with engine.begin() as conn:
        for table in ("audit_events", "audit_checkpoints"):
            if engine.dialect.name == "postgresql":
                conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}"))
            else:
                conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_update"))
                conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_delete"))
