"""`fedvault demo`: run a real local federation end to end and show its progress."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fedvault.common.errors import FedvaultError
from fedvault.common.run_config import RunSettings
from fedvault.server.core.settings import DATA_DIR_ENV, DEFAULT_DATA_DIR, ServerSettings
from fedvault.server.demo.federation import APP_DIR, LocalFederation, follow_report
from fedvault.server.demo.workspace import Workspace
from fedvault.server.serve.datadir import init_data_dir

__all__ = ["demo", "run_demo"]

log = logging.getLogger(__name__)
console = Console()


class DemoDataset(StrEnum):
    digits = "digits"
    breast_cancer = "breast_cancer"


MODEL_FOR = {DemoDataset.digits: "cnn", DemoDataset.breast_cancer: "mlp"}


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _print_round(event: dict[str, Any], rounds: int) -> None:
    eps = " ".join(
        f"{s['site']}={s['epsilon']:.2f}" for s in sorted(event["sites"], key=lambda s: s["site"])
    )
    loss = "—" if event["loss"] is None else f"{event['loss']:.3f}"
    console.print(
        f"[bold]round {event['round']}/{rounds}[/]  accuracy [green]{_pct(event['accuracy'])}[/]"
        f"  loss {loss}  ε {eps}"
    )
    for r in event["rejected"]:
        console.print(f"  [yellow]update from {r['site']} dropped:[/] {r['reason']}")
    for f in event["failed"]:
        console.print(f"  [yellow]node {f['node']} failed:[/] {f['reason']}")
    for r in event.get("refused", []):
        console.print(f"  [cyan]node {r['node']} refused the round:[/] {r['reason']}")


def _summary(events: list[dict[str, Any]], elapsed: float) -> None:
    finished = next((e for e in events if e["event"] == "finished"), None)
    last_sites: dict[str, dict[str, Any]] = {}
    for e in events:
        if e["event"] == "round":
            for s in e["sites"]:
                last_sites[s["site"]] = s
    table = Table(title="Privacy spent per site (whole run)")
    for col in ("site", "examples", "epsilon", "delta", "noise multiplier", "steps"):
        table.add_column(col, justify="right" if col != "site" else "left")
    for name, s in sorted(last_sites.items()):
        table.add_row(
            name,
            str(int(s["num-examples"])),
            f"{s['epsilon']:.3f}",
            f"{s['delta']:.1e}",
            f"{s['noise-multiplier']:.3f}",
            str(int(s["total-steps"])),
        )
    console.print(table)
    if finished:
        console.print(
            f"[bold green]Done[/] in {elapsed:.0f} s: final accuracy "
            f"{_pct(finished['accuracy'])} on the server's held-out set. Final model "
            f"[cyan]{finished['model']}[/]: see `fedvault models show {finished['model']}`."
        )


def run_demo(
    settings: RunSettings, *, sites: int, workdir: Path, data_dir: Path
) -> list[dict[str, Any]]:
    """Run one federation in ``workdir``, storing models in ``data_dir``; return its events.

    Raises:
        FedvaultError: a process failed, sites did not join, or the run failed.
    """
    console.print(f"Workspace [cyan]{workdir}[/]: CA, server certificate, {sites} node keys")
    workspace = Workspace.create(workdir, sites=sites)
    init_data_dir(ServerSettings(data_dir=data_dir))
    console.print(f"Models are stored encrypted in [cyan]{data_dir}[/]")
    report = workdir / "report.jsonl"
    report.unlink(missing_ok=True)
    with LocalFederation(workspace, data_dir=data_dir) as fed:
        console.print(f"SuperLink on [cyan]{fed.superlink.address}[/] (TLS, node authentication)")
        for site in range(sites):
            fed.register(site)
            fed.start_site(
                site,
                {
                    "partition-id": site,
                    "num-partitions": sites,
                    "site-name": f"site-{site}",
                    "site-dir": str(workspace.site_dir(site)),
                },
            )
        with console.status(f"Waiting for {sites} sites to join…"):
            fed.wait_online(sites)
        console.print(
            f"{sites} sites joined; starting {settings.num_server_rounds} rounds of DP FedAvg"
        )
        config = settings.to_run_config() | {"report-path": str(report)}
        run_id = fed.superlink.start_run(APP_DIR, config)
        started = time.monotonic()
        with console.status("Training…") as status:

            def on_event(event: dict[str, Any]) -> None:
                if event["event"] == "round":
                    _print_round(event, settings.num_server_rounds)
                    status.update(f"Round {event['round'] + 1}/{settings.num_server_rounds}…")
                elif event["event"] == "resumed":
                    console.print(
                        f"[cyan]Resuming run {event['run_id']}[/] after its stored round "
                        f"{event['round']}"
                    )
                elif event["event"] == "stored":
                    console.print(f"  stored [cyan]{event['model']}[/] (encrypted)")
                elif event["event"] == "failed":
                    console.print(f"[red]Run failed:[/] {event['reason']}")

            outcome, events = follow_report(
                fed.superlink,
                run_id,
                report,
                on_event=on_event,
                timeout=settings.round_timeout * settings.num_server_rounds + 60,
            )
        if outcome.sub_status != "completed":
            reason = next((e["reason"] for e in events if e["event"] == "failed"), outcome.details)
            raise FedvaultError(f"Run {run_id} {outcome.sub_status}: {reason}")
        _summary(events, time.monotonic() - started)
        return events


def demo(
    sites: Annotated[int, typer.Option(min=1, max=20, help="Number of sites (SuperNodes).")] = 3,
    rounds: Annotated[int, typer.Option(min=1, help="Federated rounds.")] = 5,
    dataset: Annotated[
        DemoDataset, typer.Option(help="Bundled dataset to partition.")
    ] = DemoDataset.digits,
    target_epsilon: Annotated[
        float | None, typer.Option(help="Epsilon each site may spend over the whole run.")
    ] = None,
    noise_multiplier: Annotated[
        float | None, typer.Option(help="Fixed noise multiplier instead of a target epsilon.")
    ] = None,
    non_iid: Annotated[
        float | None,
        typer.Option(
            "--non-iid",
            metavar="ALPHA",
            help="Dirichlet alpha for non-IID partitions (default IID).",
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed for partitions, model init, sampling and noise.")
    ] = 42,
    run_name: Annotated[
        str,
        typer.Option(
            help="Name the run so it can be resumed: a run with this name that stored some "
            "rounds continues after the newest of them."
        ),
    ] = "",
    data_dir: Annotated[
        Path,
        typer.Option(
            envvar=DATA_DIR_ENV, help="Server data directory: database, keyring, encrypted models."
        ),
    ] = DEFAULT_DATA_DIR,
    workdir: Annotated[
        Path | None, typer.Option(help="Keep the workspace here instead of a temporary folder.")
    ] = None,
) -> None:
    """Run a whole local federation: SuperLink over TLS with node auth, one SuperNode per
    site, DP-SGD at every site, FedAvg with update validation; then stop everything."""
    if target_epsilon is not None and noise_multiplier is not None:
        raise typer.BadParameter("give --target-epsilon or --noise-multiplier, not both")
    if target_epsilon is not None and not target_epsilon > 0:
        raise typer.BadParameter(f"--target-epsilon must be > 0, got {target_epsilon}")
    settings = RunSettings(
        num_server_rounds=rounds,
        dataset=dataset.value,
        model=MODEL_FOR[dataset],
        target_epsilon=0.0 if noise_multiplier is not None else (target_epsilon or 8.0),
        noise_multiplier=0.0 if noise_multiplier is None else noise_multiplier,
        non_iid_alpha=non_iid or 0.0,
        min_sites=sites,
        seed=seed,
        run_name=run_name,
    )
    temporary = workdir is None
    root = Path(tempfile.mkdtemp(prefix="fedvault-demo-")) if workdir is None else workdir
    root.mkdir(parents=True, exist_ok=True)
    ok = False
    try:
        run_demo(settings, sites=sites, workdir=root, data_dir=data_dir.resolve())
        ok = True
    except KeyboardInterrupt:
        console.print("[yellow]Interrupted: every process was stopped.[/]")
        raise typer.Exit(130) from None
    finally:
        if temporary and ok:
            shutil.rmtree(root, ignore_errors=True)
        elif not ok:
            console.print(
                f"Logs kept in [cyan]{root / 'logs'}[/] and {root / 'superlink' / 'logs'}"
            )
