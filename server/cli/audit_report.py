"""`fedvault audit report ...`: the compliance reports, as tables."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from fedvault.server.audit.canonical import parse_time
from fedvault.server.audit.federation import ModelLineage, model_lineage, privacy_spend
from fedvault.server.audit.reports import actor_activity, denied_actions, who_accessed
from fedvault.server.cli._common import (
    DatabaseUrl,
    DataDir,
    Since,
    Until,
    console,
    read_engine,
)
from fedvault.server.core.settings import DEFAULT_DATA_DIR

__all__ = ["report_app"]

report_app = typer.Typer(
    help="Compliance reports: model access, a principal's actions, denials, privacy, lineage.",
    no_args_is_help=True,
)


def _table(title: str, columns: tuple[str, ...], rows: list[tuple[object, ...]]) -> None:
    if not rows:
        console.print(f"{title}: nothing recorded.")
        return
    table = Table(title=title)
    for name in columns:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*("—" if v is None else str(v) for v in row))
    console.print(table)


@report_app.command("access")
def access(
    model: Annotated[str, typer.Argument(help="Model ID (all versions) or ID:VERSION.")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database_url: DatabaseUrl = None,
) -> None:
    """Who accessed a model: each principal's actions on it, with counts and times."""
    engine = read_engine(data_dir, database_url)
    try:
        rows = who_accessed(engine, model)
    finally:
        engine.dispose()
    _table(
        f"Access to {model}",
        ("actor", "type", "action", "outcome", "count", "first (UTC)", "last (UTC)"),
        [(r.actor, r.actor_type, r.action, r.outcome, r.events, r.first, r.last) for r in rows],
    )


@report_app.command("actor")
def actor(
    name: Annotated[str, typer.Argument(help="The principal (user, service or site).")],
    since: Since = None,
    until: Until = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database_url: DatabaseUrl = None,
) -> None:
    """Everything one principal did, by action, resource type and outcome."""
    window = (
        parse_time(since, name="since") if since else None,
        parse_time(until, name="until") if until else None,
    )
    engine = read_engine(data_dir, database_url)
    try:
        rows = actor_activity(engine, name, since=window[0], until=window[1])
    finally:
        engine.dispose()
    _table(
        f"Actions of {name}",
        ("action", "resource type", "outcome", "count", "first (UTC)", "last (UTC)"),
        [(r.action, r.resource_type, r.outcome, r.events, r.first, r.last) for r in rows],
    )


@report_app.command("denied")
def denied(
    since: Since = None,
    until: Until = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database_url: DatabaseUrl = None,
) -> None:
    """Denied actions in a time window: who tried what, where, and the deciding policy."""
    window = (
        parse_time(since, name="since") if since else None,
        parse_time(until, name="until") if until else None,
    )
    engine = read_engine(data_dir, database_url)
    try:
        rows = denied_actions(engine, since=window[0], until=window[1])
    finally:
        engine.dispose()
    _table(
        "Denied actions",
        ("actor", "action", "resource", "policy", "count", "first (UTC)", "last (UTC)"),
        [
            (
                r.actor,
                r.action,
                f"{r.resource_type}:{r.resource_id}",
                r.policy,
                r.events,
                r.first,
                r.last,
            )
            for r in rows
        ],
    )


@report_app.command("privacy")
def privacy(
    run: Annotated[str | None, typer.Option(help="Only this run.")] = None,
    project: Annotated[str | None, typer.Option(help="Only this project.")] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database_url: DatabaseUrl = None,
) -> None:
    """Privacy spend (epsilon) per site per run."""
    engine = read_engine(data_dir, database_url)
    try:
        rows = privacy_spend(engine, run_id=run, project=project)
    finally:
        engine.dispose()
    _table(
        "Privacy spend per site per run",
        ("run", "project", "site", "epsilon", "delta", "rounds", "figure"),
        [
            (
                r.run_id,
                r.project,
                r.site,
                f"{r.epsilon:.4g}" if r.epsilon is not None else None,
                f"{r.delta:.1e}" if r.delta is not None else None,
                ",".join(map(str, r.rounds)),
                "final (accountant)" if r.final else "latest reported",
            )
            for r in rows
        ],
    )


def _print_lineage(lineage: ModelLineage, depth: int = 0) -> None:
    pad = "  " * depth
    console.print(
        f"{pad}[bold]{lineage.ref}[/] stored {lineage.stored_at} by run {lineage.run_id} "
        f"(project {lineage.project or '—'}), round {lineage.round}, SHA-256 {lineage.sha256}"
    )
    console.print(f"{pad}  DP: " + (json.dumps(lineage.dp) if lineage.dp else "—"))
    for site, figures in sorted(lineage.sites.items()):
        console.print(
            f"{pad}  site {site}: epsilon {figures.get('epsilon')}, delta {figures.get('delta')}"
        )
    for r in lineage.rounds:
        names = ", ".join(str(s.get("site")) for s in r.get("sites") or [])
        console.print(
            f"{pad}  round {r.get('round')}: sites {names or '—'}; rejected "
            f"{r.get('rejected')}, failed {r.get('failed')}, refused {r.get('refused')}"
        )
    console.print(f"{pad}  policies in force: {', '.join(lineage.policies) or '— (none recorded)'}")
    console.print(f"{pad}  trained from: {lineage.parent or '— (fresh)'}")


@report_app.command("lineage")
def lineage(
    ref: Annotated[str, typer.Argument(help="MODEL:VERSION")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database_url: DatabaseUrl = None,
) -> None:
    """The runs, rounds, sites, DP parameters and policies behind a model version."""
    engine = read_engine(data_dir, database_url)
    try:
        found = model_lineage(engine, ref)
    finally:
        engine.dispose()
    _print_lineage(found)
    for depth, ancestor in enumerate(found.ancestors, 1):
        _print_lineage(ancestor, depth)
