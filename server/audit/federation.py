"""Federation reports from run events: privacy spend per site per run, and model lineage."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from fedvault.common.errors import NotFound
from fedvault.server.audit._chain import EVENTS
from fedvault.server.audit.run_events import MODEL_STORED, ROUND, RUN_FINISHED, RUN_STARTED
from fedvault.server.store.service import parse_ref

__all__ = ["ModelLineage", "PrivacyRow", "model_lineage", "privacy_spend"]

c = EVENTS.c
_MAX_ANCESTORS = 100


@dataclass(frozen=True)
class PrivacyRow:
    """A site's epsilon in one run: the accountant's figure once the run finished,
    else the newest the site reported."""

    run_id: str
    project: str | None
    site: str
    epsilon: float | None
    delta: float | None
    rounds: list[int]
    final: bool


@dataclass(frozen=True)
class ModelLineage:
    """Where a model version came from, as the audit log recorded it."""

    ref: str
    stored_at: str
    run_id: str
    project: str | None
    round: int | None
    sha256: str | None
    dp: dict[str, Any]
    sites: dict[str, dict[str, Any]]
    rounds: list[dict[str, Any]]
    policies: list[str]
    parent: str | None
    ancestors: list[ModelLineage] = field(default_factory=list)


def _run_events(engine: Engine, actions: tuple[str, ...], run_id: str | None = None) -> list[Any]:
    query = select(c.seq, c.time, c.action, c.resource_id, c.project, c.policy, c.details).where(
        c.resource_type == "run", c.action.in_(actions)
    )
    if run_id is not None:
        query = query.where(c.resource_id == run_id)
    with engine.connect() as conn:
        return list(conn.execute(query.order_by(c.seq)))


def privacy_spend(
    engine: Engine, *, run_id: str | None = None, project: str | None = None
) -> list[PrivacyRow]:
    """Epsilon per site per run, from the runs' round and finished events."""
    runs: dict[str, dict[str, Any]] = {}
    for row in _run_events(engine, (ROUND, RUN_FINISHED), run_id):
        if project is not None and row.project != project:
            continue
        run = runs.setdefault(row.resource_id, {"project": row.project, "sites": {}})
        details = json.loads(row.details)
        if row.action == ROUND:
            for s in details.get("sites", []):
                site = run["sites"].setdefault(s["site"], {"rounds": [], "final": False})
                site["rounds"].append(details.get("round"))
                if not site["final"]:
                    site["epsilon"], site["delta"] = s.get("epsilon"), s.get("delta")
        else:
            for name, epsilon in (details.get("run_epsilon") or {}).items():
                site = run["sites"].setdefault(name, {"rounds": [], "delta": None})
                site["epsilon"], site["final"] = epsilon, True
    return [
        PrivacyRow(
            run_id=run_name,
            project=run["project"],
            site=name,
            epsilon=s.get("epsilon"),
            delta=s.get("delta"),
            rounds=s["rounds"],
            final=s["final"],
        )
        for run_name, run in runs.items()
        for name, s in sorted(run["sites"].items())
    ]


def model_lineage(engine: Engine, ref: str) -> ModelLineage:
    """The run, rounds, sites, DP parameters and policies behind ``ID:VERSION``, and its
    ancestors (the versions it was trained from), newest first.

    Raises:
        ConfigError: ``ref`` is not ``ID:VERSION``.
        NotFound: the log has no record of that version being stored.
    """
    lineage = _one(engine, ref)
    seen = {lineage.ref}
    parent = lineage.parent
    while parent and parent not in seen and len(lineage.ancestors) < _MAX_ANCESTORS:
        try:
            ancestor = _one(engine, parent)
        except NotFound:
            break
        lineage.ancestors.append(ancestor)
        seen.add(parent)
        parent = ancestor.parent
    return lineage


def _one(engine: Engine, ref: str) -> ModelLineage:
    model_id, version = parse_ref(ref)
    ref = f"{model_id}:{version}"
    with engine.connect() as conn:
        stored = conn.execute(
            select(c.seq, c.time, c.details)
            .where(c.resource_type == "model", c.resource_id == ref, c.action == MODEL_STORED)
            .order_by(c.seq)
            .limit(1)
        ).first()
    if stored is None or version is None:
        raise NotFound(f"The audit log has no record of {ref} being stored by a run.")
    details = json.loads(stored.details)
    run_id = str(details.get("run_id"))
    start: dict[str, Any] = {}
    rounds, policies, project = [], set(), None
    for row in _run_events(engine, (RUN_STARTED, ROUND), run_id):
        if row.seq > stored.seq:
            break
        project = row.project
        if row.policy:
            policies.add(row.policy)
        if row.action == RUN_STARTED:
            start = json.loads(row.details)
        else:
            rounds.append(json.loads(row.details))
    return ModelLineage(
        ref=ref,
        stored_at=stored.time,
        run_id=run_id,
        project=project,
        round=details.get("round"),
        sha256=details.get("sha256"),
        dp=start.get("dp", {}),
        sites=details.get("privacy", {}),
        rounds=[
            {k: r.get(k) for k in ("round", "accuracy", "sites", "rejected", "failed", "refused")}
            for r in rounds
        ],
        policies=sorted(policies),
        parent=start.get("parent"),
    )
