"""Options and helpers shared by the `fedvault audit` commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from fedvault.common.errors import ConfigError
from fedvault.server.audit.service import public_key_of
from fedvault.server.audit.signing import PublicKey
from fedvault.server.core.settings import DATA_DIR_ENV, ServerSettings

console = Console()
err_console = Console(stderr=True)

DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar=DATA_DIR_ENV,
        help="Server data directory (its database and audit signing key).",
    ),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--db",
        "--database-url",
        envvar="FEDVAULT_DATABASE_URL",
        help="SQLAlchemy URL of the database (default: fedvault.db in the data directory).",
    ),
]
PublicKeyFile = Annotated[
    Path | None,
    typer.Option(
        "--public-key",
        help="The audit public key exported earlier (PEM or verifier key). Default: the "
        "data directory's own key, which an intruder there could have replaced.",
    ),
]
Since = Annotated[
    str | None, typer.Option(help="From this ISO 8601 time or date on (inclusive, UTC if Z).")
]
Until = Annotated[str | None, typer.Option(help="Before this ISO 8601 time or date.")]
Actor = Annotated[str | None, typer.Option(help="Only events by this principal.")]
Action = Annotated[str | None, typer.Option(help="Only this action, e.g. model.pull.")]
ResourceType = Annotated[str | None, typer.Option(help="Only this resource type, e.g. model.")]
Resource = Annotated[str | None, typer.Option(help="Only this resource id, e.g. digits-cnn:3.")]
Project = Annotated[str | None, typer.Option(help="Only this project.")]
OutcomeOpt = Annotated[str | None, typer.Option(help="Only allowed, denied or failed events.")]


def settings(data_dir: Path, database_url: str | None) -> ServerSettings:
    return ServerSettings(data_dir=data_dir, database_url=database_url)


def read_engine(data_dir: Path, database_url: str | None) -> Engine:
    """An engine on an existing database with an audit log; nothing is migrated or written.

    Unlike the server's engine it changes no SQLite setting, so a copy kept as evidence
    stays as it was.

    Raises:
        ConfigError: no such database, or it holds no audit log.
    """
    url = settings(data_dir, database_url).resolved_database_url()
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() == "sqlite" and database and not Path(database).is_file():
        raise ConfigError(
            f"No database at {database}. Pass --data-dir or --db with the copy to inspect."
        )
    engine = create_engine(url, pool_pre_ping=True)
    shown = parsed.render_as_string(hide_password=True)
    try:
        present = inspect(engine).has_table("audit_events")
    except SQLAlchemyError as e:
        engine.dispose()
        raise ConfigError(f"Cannot read the database {shown}: {e}") from e
    if not present:
        engine.dispose()
        raise ConfigError(
            f"The database {shown} has no audit log; `fedvault keys init` creates one."
        )
    return engine


def load_public_key(path: Path | None, data_dir: Path) -> PublicKey:
    if path is not None:
        return PublicKey.load(path)
    err_console.print(
        "[yellow]Checking against the data directory's own key; for an independent check "
        "pass --public-key with the key exported earlier.[/]"
    )
    return public_key_of(data_dir)
