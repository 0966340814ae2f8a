"""The `fedvault` command: a root that gathers each side's commands from entry points."""

from __future__ import annotations

import logging
import sys
from importlib.metadata import entry_points

import typer
from rich.console import Console
from rich.markup import escape

from fedvault.common.errors import FedvaultError

__all__ = ["build_app", "main"]

ENTRY_POINT_GROUP = "fedvault.cli"
err_console = Console(stderr=True)


def build_app() -> typer.Typer:
    """Build the root command with every installed command group."""
    app = typer.Typer(
        name="fedvault",
        rich_markup_mode="markdown",  # docstring paragraphs reflow to the terminal
        help="Privacy-preserving federated learning: sites train one model together with "
        "differential privacy; no raw record leaves a site.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def root() -> None:
        """Privacy-preserving federated learning."""

    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            target = ep.load()
        except ImportError as e:
            _add_unavailable(app, ep.name, e)
            continue
        if isinstance(target, typer.Typer):
            app.add_typer(target, name=ep.name)
        else:
            app.command(name=ep.name)(target)
    return app


def _add_unavailable(app: typer.Typer, name: str, error: ImportError) -> None:
    reason = f"needs a package that is not installed ({error.name or error})"

    def unavailable() -> None:
        err_console.print(
            f"[red]`fedvault {name}` {reason}.[/] Install the matching extra, e.g. "
            "`pip install 'fedvault[server]'`."
        )
        raise typer.Exit(2)

    app.command(name=name, help=f"(unavailable: {reason})")(unavailable)


def main() -> None:
    """Run the CLI; a FedvaultError becomes one red line and exit status 1, not a traceback."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        build_app()()
    except FedvaultError as e:
        err_console.print(f"[red]error:[/] {escape(str(e))}")  # messages echo input
        sys.exit(1)
