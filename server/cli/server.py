"""`fedvault server`: set up the server's data directory, then run the whole server."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from sqlalchemy.exc import ArgumentError
from sqlmodel import Session

from fedvault.common.errors import ConfigError
from fedvault.server.audit.service import audited_local_action
from fedvault.server.core.db import open_database
from fedvault.server.core.settings import (
    DATA_DIR_ENV,
    DEFAULT_DATA_DIR,
    ServerSettings,
    read_settings_file,
    write_settings_file,
)
from fedvault.server.identity import bootstrap_admin, ensure_pepper, load_pepper
from fedvault.server.identity.service import check_id
from fedvault.server.serve.control import ServerPaths
from fedvault.server.serve.datadir import init_data_dir
from fedvault.server.serve.tls import ensure_server_tls, server_names

__all__ = ["server_app"]

console = Console()

server_app = typer.Typer(
    help="The admin plane: `init` a data directory once, then `start` the server.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar=DATA_DIR_ENV,
        help="Server data directory (database, keys, TLS material, logs).",
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


def _settings(data_dir: Path, database_url: str | None, **overrides: object) -> ServerSettings:
    given: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    try:
        return ServerSettings(data_dir=data_dir, database_url=database_url, **given)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        raise ConfigError(
            f"Invalid server settings (options or FEDVAULT_* variables): {problems}"
        ) from None


def _remember_database(settings: ServerSettings) -> None:
    """Record --database-url in the data directory, refusing to switch an existing one."""
    data_dir = settings.require_data_dir()
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(f"--data-dir {data_dir} exists and is not a directory.")
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"Cannot create the data directory {data_dir}: {e.strerror}.") from e
    stored = read_settings_file(data_dir).get("database_url")
    given = settings.database_url
    if given is None or given == stored:
        return
    if stored is not None or (data_dir / "fedvault.db").exists():
        raise ConfigError(
            f"{data_dir} was initialised with another database. Keep it (leave out "
            f"--database-url), or start a new data directory for the new database."
        )
    write_settings_file(data_dir, database_url=given)


def _prepare_data_dir(settings: ServerSettings) -> Path:
    data_dir = settings.require_data_dir()
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(f"--data-dir {data_dir} exists and is not a directory.")
    try:
        return init_data_dir(settings)
    except ArgumentError as e:
        raise ConfigError(
            f"--database-url is not a database URL SQLAlchemy understands ({e}); e.g. "
            "postgresql+psycopg://user@host/db or sqlite:////path/fedvault.db."
        ) from e
    except OSError as e:
        raise ConfigError(f"Cannot create the data directory {data_dir}: {e.strerror}.") from e


def _seed_and_bootstrap(settings: ServerSettings, *, admin: str) -> tuple[int, str | None]:
    # Imported here: the policy engine (cedarpy) is not needed for `--help` or `start`.
    from fedvault.server.authz.store import seed_defaults

    pepper = load_pepper(settings)
    engine = open_database(settings.resolved_database_url())
    try:
        with Session(engine) as session:
            seeded = seed_defaults(session)
            session.commit()
            with audited_local_action(
                settings,
                action="server.init",
                resource_type="server",
                resource_id="fedvault",
                details={"admin": admin},
            ):
                token = bootstrap_admin(session, pepper=pepper, user_id=admin)
                session.commit()
    finally:
        engine.dispose()
    return seeded, token


@server_app.command("init")
def init(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database_url: DatabaseUrl = None,
    admin: Annotated[
        str, typer.Option("--admin", help="Login name of the first administrator.")
    ] = "admin",
    hostname: Annotated[
        list[str] | None,
        typer.Option(
            "--hostname",
            help="A name or address sites use to reach this server (repeatable); "
            "localhost, 127.0.0.1 and ::1 are always in the certificate.",
        ),
    ] = None,
) -> None:
    """Create the data directory: keys, TLS certificates, database, policies, first admin.

    Safe to run again: what exists is kept, and the admin token is printed only the first
    time. Give `tls/ca.pem` to sites and API clients: it is their root of trust.
    """
    check_id(admin, what="user")
    names = server_names(hostname or [])
    settings = _settings(data_dir, database_url)
    _remember_database(settings)
    path = _prepare_data_dir(settings)
    paths = ServerPaths(path)
    tls_created, unnamed = ensure_server_tls(paths, names)
    pepper_created = settings.token_pepper is None and ensure_pepper(path)
    seeded, token = _seed_and_bootstrap(settings, admin=admin)

    console.print(f"Data directory ready at [cyan]{path}[/].")
    state = "created" if tls_created else "kept"
    console.print(f"TLS: {state}; sites and API clients trust [cyan]{paths.ca}[/].")
    if unnamed:
        console.print(
            f"[yellow]The existing server certificate does not name {', '.join(unnamed)}.[/] "
            f"It was left as it is; to re-issue, move {paths.tls_dir} away and run init "
            "again (sites must then trust the new ca.pem)."
        )
    console.print(f"Token pepper: {'created' if pepper_created else 'kept'}.")
    console.print(f"Access policies: {f'{seeded} defaults seeded' if seeded else 'kept'}.")
    if token is None:
        console.print("Users exist already: no admin token printed (issue tokens via the API).")
        return
    console.print(f"Admin [bold]{admin}[/] created. Its API token, shown this once (store it now):")
    console.print(token, highlight=False, soft_wrap=True)


def _check_port(host: str, port: int, *, option: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise ConfigError(
                f"Cannot listen on {host}:{port} ({e.strerror}); pick another with {option}."
            ) from e


def _preflight(settings: ServerSettings, *, insecure_http: bool) -> ServerPaths:
    paths = ServerPaths(settings.require_data_dir())
    if not all(p.exists() for p in (paths.ca, paths.cert, paths.key)):
        raise ConfigError(
            f"{paths.data_dir} is not a server data directory yet; run "
            f"`fedvault server init --data-dir {paths.data_dir}` first."
        )
    load_pepper(settings)  # the API needs it: refuse a missing or unsafe pepper now
    if insecure_http and settings.mode != "test":
        raise ConfigError(
            "--insecure-http sends API tokens in clear text; it is allowed only with "
            "FEDVAULT_MODE=test."
        )
    ports = {
        "--superlink-port": ("127.0.0.1", settings.superlink_port),
        "--fleet-port": (settings.fleet_host, settings.fleet_port),
        "--api-port": (settings.api_host, settings.api_port),
    }
    numbers = [port for _, port in ports.values()]
    if len(set(numbers)) != len(numbers):
        raise ConfigError(f"The SuperLink, fleet and API ports must differ (got {numbers}).")
    for option, (host, port) in ports.items():
        _check_port(host, port, option=option)
    if importlib.util.find_spec("fedvault.server.api.app") is None:
        raise ConfigError("The admin API (fedvault.server.api.app) is not installed.")
    return paths


@server_app.command("start")
def start(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database_url: DatabaseUrl = None,
    api_host: Annotated[
        str | None, typer.Option(help="Admin API address [default: 127.0.0.1].")
    ] = None,
    api_port: Annotated[int | None, typer.Option(help="Admin API port [default: 8443].")] = None,
    fleet_host: Annotated[
        str | None, typer.Option(help="Where sites connect [default: 0.0.0.0].")
    ] = None,
    fleet_port: Annotated[
        int | None, typer.Option(help="Port sites connect to [default: 9092].")
    ] = None,
    superlink_port: Annotated[
        int | None, typer.Option(help="The SuperLink's own port, on 127.0.0.1 [default: 9093].")
    ] = None,
    insecure_http: Annotated[
        bool,
        typer.Option(
            "--insecure-http",
            help="Serve the admin API over plain HTTP (FEDVAULT_MODE=test only).",
        ),
    ] = False,
) -> None:
    """Run the SuperLink, the fleet gateway and the admin API until Ctrl-C or SIGTERM.

    The SuperLink listens on loopback only; sites reach its Fleet API through the gateway,
    which passes nothing else on. A process that crashes is restarted (at most 5 times in
    5 minutes); after that the server stops and says which process failed and why.
    Settings also come from `FEDVAULT_*` environment variables.
    """
    from fedvault.server.serve.supervisor import Supervisor, server_children

    settings = _settings(
        data_dir,
        database_url,
        api_host=api_host,
        api_port=api_port,
        fleet_host=fleet_host,
        fleet_port=fleet_port,
        superlink_port=superlink_port,
    )
    paths = _preflight(settings, insecure_http=insecure_http)
    if insecure_http:
        console.print(
            "[bold red]WARNING: the admin API serves plain HTTP; tokens cross the network "
            "in clear text. Never do this outside a test.[/]"
        )

    def ready() -> None:
        console.print(
            f"[green]fedvault server is up.[/] Sites connect to port {settings.fleet_port} "
            f"trusting {paths.ca}. Logs in {paths.logs_dir} and {paths.superlink_dir / 'logs'}. "
            "Ctrl-C stops it."
        )

    supervisor = Supervisor(
        server_children(settings, insecure_http=insecure_http),
        report=lambda line: console.print(line, highlight=False),
        on_ready=ready,
    )
    supervisor.run()
    console.print("fedvault server stopped.")
