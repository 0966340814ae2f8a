"""`fedvault models` and `fedvault keys`: the model store and its keys, from the shell."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fedvault.common.errors import ConfigError
from fedvault.server.audit.service import audited_local_action
from fedvault.server.core.settings import DATA_DIR_ENV, DEFAULT_DATA_DIR, ServerSettings
from fedvault.server.serve.datadir import init_data_dir
from fedvault.server.store.cleanup import DEFAULT_AGE, clean_up
from fedvault.server.store.from_settings import open_store
from fedvault.server.store.service import ModelStore, parse_ref
from fedvault.server.store.tables import ModelVersionPublic

__all__ = ["keys_app", "models_app"]

console = Console()

DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar=DATA_DIR_ENV,
        help="Server data directory (database, keyring, encrypted blobs).",
    ),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="FEDVAULT_DATABASE_URL",
        help="SQLAlchemy URL (default: SQLite fedvault.db in the data directory).",
    ),
]

models_app = typer.Typer(
    help="Stored models: list them, show lineage and metrics, decrypt one to a file.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
keys_app = typer.Typer(
    help="Key-encryption keys: create, inspect, rotate and retire.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)


def _store(data_dir: Path, database_url: str | None) -> ModelStore:
    return open_store(ServerSettings(data_dir=data_dir, database_url=database_url))


def _audited(
    data_dir: Path,
    database_url: str | None,
    action: str,
    resource_type: str,
    resource_id: str,
    **details: Any,
) -> AbstractContextManager[None]:
    """Record a local user's action in the audit log before it runs (see fedvault.server.audit)."""
    return audited_local_action(
        ServerSettings(data_dir=data_dir, database_url=database_url),
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        details=details,
    )


def _eps(version: ModelVersionPublic) -> str:
    values = [float(s.get("epsilon", 0.0)) for s in version.sites]
    return f"{max(values):.3f}" if values else "—"


@models_app.command("list")
def list_models(data_dir: DataDir = DEFAULT_DATA_DIR, database_url: DatabaseUrl = None) -> None:
    """Every stored model with its newest version."""
    store = _store(data_dir, database_url)
    rows = store.list_models()
    if not rows:
        console.print(f"No models stored in {data_dir} yet. `fedvault demo` trains one.")
        return
    table = Table()
    for name in ("model", "versions", "newest", "run", "round", "accuracy", "max site ε", "when"):
        table.add_column(name)
    for model, newest, count in rows:
        acc = newest.metrics.get("accuracy") if newest else None
        table.add_row(
            model.id,
            str(count),
            newest.ref if newest else "—",
            (newest.run_id or "—") if newest else "—",
            str(newest.round) if newest and newest.round is not None else "—",
            f"{100 * acc:.1f}%" if isinstance(acc, float) else "—",
            _eps(newest) if newest else "—",
            newest.created_at.strftime("%Y-%m-%d %H:%M") if newest else "—",
        )
    console.print(table)


@models_app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help="ID or ID:VERSION (newest when no version).")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database_url: DatabaseUrl = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead.")] = False,
) -> None:
    """Lineage, privacy spend per site, DP parameters and metrics of one version."""
    model_id, version = parse_ref(ref)
    v = _store(data_dir, database_url).get(model_id, version)
    if as_json:
        console.print_json(json.dumps(v.model_dump(mode="json")))
        return
    parent = f"{v.parent_model_id}:{v.parent_version}" if v.parent_model_id else "— (fresh)"
    console.print(f"[bold]{v.ref}[/]  created {v.created_at:%Y-%m-%d %H:%M:%S} by {v.created_by}")
    console.print(f"  run {v.run_id or '—'}, round {v.round if v.round is not None else '—'}")
    console.print(f"  started from {parent}")
    console.print(f"  {v.format}, {v.size} bytes, SHA-256 {v.sha256}")
    console.print(
        "  metrics: " + (", ".join(f"{k} {val:.4g}" for k, val in v.metrics.items()) or "—")
    )
    console.print("  DP: " + ", ".join(f"{k} {val}" for k, val in v.dp.items()))
    if v.sites:
        table = Table(title="Contributing sites (epsilon over the whole run)")
        for name in ("site", "epsilon", "delta", "rounds", "steps"):
            table.add_column(name)
        for s in v.sites:
            table.add_row(
                str(s["site"]),
                f"{float(s['epsilon']):.3f}",
                f"{float(s['delta']):.1e}",
                ",".join(str(r) for r in s.get("rounds", [])),
                str(s.get("steps", "—")),
            )
        console.print(table)


@models_app.command("pull")
def pull(
    ref: Annotated[str, typer.Argument(help="ID or ID:VERSION (newest when no version).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="File to write (safetensors).")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database_url: DatabaseUrl = None,
    force: Annotated[bool, typer.Option(help="Overwrite OUTPUT if it exists.")] = False,
) -> None:
    """Decrypt a version to a file (0600), checking it end to end first.

    Whoever can read the data directory's keyring may pull; through the admin API a
    policy decides instead. Nothing is written if any check fails.
    """
    model_id, version = parse_ref(ref)
    if output.exists() and not force:
        raise ConfigError(f"{output} exists; pass --force to overwrite it.")
    store = _store(data_dir, database_url)
    target = store.get(model_id, version)
    # Audit: the download is on record before a byte is decrypted.
    with _audited(data_dir, database_url, "model.pull", "model", target.ref, sha256=target.sha256):
        v = store.pull(model_id, target.version, output)
    console.print(f"Wrote {v.ref} to [cyan]{output}[/] ({v.size} bytes, SHA-256 verified).")


@models_app.command("clean-up")
def clean_up_command(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database_url: DatabaseUrl = None,
    older_than: Annotated[
        int,
        typer.Option(
            "--older-than-minutes",
            min=0,
            help="Only what was left unfinished at least this long ago; a write still in "
            "progress is younger. 0 clears everything unfinished: use it only with no "
            "server or run writing models.",
        ),
    ] = int(DEFAULT_AGE.total_seconds() // 60),
) -> None:
    """Remove versions whose writer died before finishing, and blob files nothing uses.

    Finished versions are never touched. Needed after a crash before a KEK version can
    be retired.
    """
    store = _store(data_dir, database_url)
    with _audited(
        data_dir, database_url, "model.clean_up", "store", "blobs", older_than_minutes=older_than
    ):
        done = clean_up(store, older_than=timedelta(minutes=older_than))
    if done.empty:
        console.print("Nothing to clean up: every version is finished and every blob is used.")
        return
    for ref in done.versions:
        console.print(f"Removed unfinished version [cyan]{ref}[/].")
    for name in done.files:
        console.print(f"Removed stray blob file [cyan]{name}[/].")


@keys_app.command("init")
def init(data_dir: DataDir = DEFAULT_DATA_DIR, database_url: DatabaseUrl = None) -> None:
    """Create the data directory (0700), a keyring (0600) and the database schema."""
    path = init_data_dir(ServerSettings(data_dir=data_dir, database_url=database_url))
    console.print(f"Data directory ready at [cyan]{path}[/].")


@keys_app.command("status")
def status(data_dir: DataDir = DEFAULT_DATA_DIR, database_url: DatabaseUrl = None) -> None:
    """Each KEK version, whether current or retired, and how many versions it wraps."""
    store = _store(data_dir, database_url)
    table = Table(title=f"Key-encryption keys in {store.kek.description}")
    for name in ("version", "created", "state", "data keys wrapped"):
        table.add_column(name)
    for s in store.kek_status():
        state = "current" if s.current else ("retired" if s.retired else "readable")
        table.add_row(str(s.version), s.created or "—", state, str(s.objects))
    console.print(table)


@keys_app.command("rotate")
def rotate(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database_url: DatabaseUrl = None,
    rewrap_only: Annotated[
        bool,
        typer.Option(help="Only re-wrap under the current version (keys made outside)."),
    ] = False,
) -> None:
    """Make a new KEK version current and re-wrap every data key (no blob is rewritten)."""
    store = _store(data_dir, database_url)
    was = store.kek.current_version()
    with _audited(data_dir, database_url, "key.rotate", "kek", f"v{was}", rewrap_only=rewrap_only):
        current, count = store.rotate_kek(new_version=not rewrap_only)
    console.print(f"KEK version {current} is current; re-wrapped {count} data key(s).")


@keys_app.command("retire")
def retire(
    version: Annotated[int, typer.Argument(help="KEK version to retire.")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database_url: DatabaseUrl = None,
) -> None:
    """Erase an old KEK version; refused while any stored version still needs it."""
    store = _store(data_dir, database_url)
    with _audited(data_dir, database_url, "key.retire", "kek", f"v{version}"):
        store.retire_kek(version)
    console.print(f"KEK version {version} retired.")
