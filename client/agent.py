"""`fedvault site`: set up a site, run its agent next to the data, see its privacy spend."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fedvault.client.ledger import LEDGER_FILE, PrivacyLedger
from fedvault.client.policy import POLICY_FILE, SitePolicy, default_policy_text
from fedvault.client.site_guard import site_secret
from fedvault.common.data import BUNDLED, load_dataset
from fedvault.common.errors import ConfigError
from fedvault.common.flower_cmd import ConfigValue, supernode_command
from fedvault.common.pki import generate_node_keys
from fedvault.common.processes import ManagedProcess, flower_env, free_port, tail

__all__ = ["site_app"]

log = logging.getLogger("fedvault.client.agent")
console = Console()

NODE_KEY = "node.key"
NAME_FILE = "site-name"
DEFAULT_SITE_DIR = Path("fedvault-site")

site_app = typer.Typer(
    help="The site agent: set up this site, run it next to its data, see its privacy spend.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

SiteDir = Annotated[
    Path,
    typer.Option(
        "--site-dir",
        envvar="FEDVAULT_SITE_DIR",
        help="Site directory (node key, site policy, privacy ledger).",
    ),
]


@site_app.command("init")
def init(
    name: Annotated[
        str, typer.Option(help="This site's name, as the server will show it (unique).")
    ],
    site_dir: SiteDir = DEFAULT_SITE_DIR,
) -> None:
    """Create the site directory: node key pair (private key 0600), policy, ledger.

    Existing files are kept, so running it again is safe.
    """
    site_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(site_dir, 0o700)
    key = site_dir / NODE_KEY
    if not name.strip():
        raise ConfigError("--name must not be empty: the server tells sites apart by it.")
    (site_dir / NAME_FILE).write_text(name.strip() + "\n", encoding="utf-8")
    if not key.exists():
        generate_node_keys(name).save(key)
        console.print(f"Node key pair written: [cyan]{key}[/] (private, 0600) and {key}.pub")
    policy = site_dir / POLICY_FILE
    if not policy.exists():
        policy.write_text(default_policy_text(), encoding="utf-8")
        console.print(f"Site policy with safe defaults: [cyan]{policy}[/] (edit to taste)")
    SitePolicy.load(policy)
    PrivacyLedger(site_dir / LEDGER_FILE)
    site_secret(site_dir)  # the key behind this site's sampling and noise; never leaves
    console.print(f"Privacy ledger: [cyan]{site_dir / LEDGER_FILE}[/]")
    console.print(
        f"Next: give [bold]{key}.pub[/] to the federation's admin to register this site, "
        "then run `fedvault site run --server HOST:PORT --ca CA.pem --data FILE`."
    )


def _check_site(site_dir: Path) -> SitePolicy:
    for needed in (NODE_KEY, POLICY_FILE, NAME_FILE):
        if not (site_dir / needed).exists():
            raise ConfigError(f"{site_dir / needed} is missing; run `fedvault site init` first.")
    policy = SitePolicy.load(site_dir / POLICY_FILE)
    PrivacyLedger(site_dir / LEDGER_FILE)
    return policy


@site_app.command("run")
def run(
    server: Annotated[str, typer.Option(help="The federation server's address, HOST:PORT.")],
    ca: Annotated[Path, typer.Option(help="CA certificate (PEM) the server's TLS chains to.")],
    data: Annotated[
        str, typer.Option(help="This site's data: a .csv or .npz file (or a bundled demo set).")
    ],
    site_dir: SiteDir = DEFAULT_SITE_DIR,
    name: Annotated[
        str, typer.Option(help="Site name reported to the server (default: the one from init).")
    ] = "",
    label_column: Annotated[str, typer.Option(help="CSV column holding the labels.")] = "label",
    dataset_id: Annotated[
        str, typer.Option(help="Budget key for this data (default: its resolved path).")
    ] = "",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    restart_delay: Annotated[
        float, typer.Option(help="Seconds before restarting a SuperNode that stopped.")
    ] = 5.0,
) -> None:
    """Run this site's SuperNode (TLS, node authentication) and keep it connected.

    Flower's SuperNode reconnects by itself while the server restarts; if it exits, the
    agent starts it again. Every round it trains is checked against the site policy and
    recorded in the privacy ledger first. Stop with Ctrl-C.
    """
    policy = _check_site(site_dir)
    if not ca.is_file():
        raise ConfigError(f"CA certificate {ca} not found.")
    if data not in BUNDLED:
        load_dataset(data, label_column=label_column)  # a clear error now, not mid-run
        data = str(Path(data).resolve())
    node_config: dict[str, ConfigValue] = {
        "data-path": data,
        "label-column": label_column,
        "site-name": name or (site_dir / NAME_FILE).read_text(encoding="utf-8").strip(),
        "site-dir": str(site_dir.resolve()),
        "device": device,
    }
    if dataset_id:
        node_config["dataset-id"] = dataset_id
    console.print(
        f"Site [bold]{node_config['site-name']}[/] serving [cyan]{data}[/] to {server}; "
        f"budget {policy.max_total_epsilon:g} epsilon per dataset, "
        f"{policy.max_run_epsilon:g} per run. Logs: {site_dir / 'logs'}"
    )
    _supervise(site_dir, server=server, ca=ca, node_config=node_config, delay=restart_delay)


def _supervise(
    site_dir: Path, *, server: str, ca: Path, node_config: dict[str, ConfigValue], delay: float
) -> None:
    follower = _LedgerFollower(PrivacyLedger(site_dir / LEDGER_FILE))
    env = flower_env(site_dir / "flwr-home")
    log_path = site_dir / "logs" / "supernode.log"
    process: ManagedProcess | None = None

    def stop_on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # a service manager's stop: same clean shutdown as Ctrl-C

    signal.signal(signal.SIGTERM, stop_on_term)
    try:
        while True:
            if process is None or not process.alive():
                if process is not None:
                    console.print(
                        f"[yellow]The SuperNode stopped (status {process.popen.returncode}); "
                        f"restarting in {delay:g} s.[/] End of its log:\n{tail(log_path, 5)}"
                    )
                    if "Failed to activate" in tail(log_path, 20):
                        console.print(
                            "[yellow]The server refused this site's key: ask its admin to "
                            f"register {site_dir / NODE_KEY}.pub.[/]"
                        )
                    time.sleep(delay)
                command = supernode_command(
                    superlink=server,
                    ca=ca,
                    private_key=site_dir / NODE_KEY,
                    port=free_port(),
                    node_config=node_config,
                )
                process = ManagedProcess(
                    "SuperNode", command, env=env, log_path=log_path, cwd=site_dir
                )
                console.print(f"Connecting to {server} (SuperNode pid {process.pid})")
            follower.poll()
            time.sleep(1.0)
    except KeyboardInterrupt:
        console.print("Stopping the SuperNode…")
    finally:
        if process is not None:
            process.stop()


class _LedgerFollower:
    """Prints what the ClientApp records in the ledger: round starts, finishes, refusals."""

    def __init__(self, ledger: PrivacyLedger):
        self.ledger = ledger
        rounds, refusals = ledger.recent(50)
        self.shown: dict[int, str] = {int(r[0]): str(r[7]) for r in rounds}
        self.refusals = {int(r[0]) for r in refusals}

    def poll(self) -> None:
        rounds, refusals = self.ledger.recent(50)
        for row_id, _when, dataset, run_id, rnd, run_eps, ds_eps, state in reversed(rounds):
            if self.shown.get(row_id) == state:
                continue
            self.shown[row_id] = state
            if state == "reserved":
                console.print(f"Training round {rnd} of run {run_id} on {dataset}…")
            else:
                console.print(
                    f"Round {rnd} of run {run_id} done: epsilon {run_eps:.3f} for this run, "
                    f"{ds_eps:.3f} in total on {dataset}"
                )
        for row_id, _when, _dataset, run_id, rnd, reason in reversed(refusals):
            if row_id not in self.refusals:
                self.refusals.add(row_id)
                console.print(f"[yellow]Refused round {rnd} of run {run_id}:[/] {reason}")


@site_app.command("status")
def status(site_dir: SiteDir = DEFAULT_SITE_DIR) -> None:
    """Budget spent and left per dataset, recent rounds and refusals."""
    policy = _check_site(site_dir)
    ledger = PrivacyLedger(site_dir / LEDGER_FILE)
    table = Table(
        title=f"Privacy budget per dataset (limit {policy.max_total_epsilon:g}, "
        f"measured with RDP at delta {policy.max_delta:g})"
    )
    for col in ("dataset", "epsilon spent", "left", "delta", "runs", "rounds", "refusals"):
        table.add_column(col)
    for s in ledger.status(budget_delta=policy.max_delta):
        table.add_row(
            s.dataset,
            f"{s.epsilon:.3f}",
            f"{max(policy.max_total_epsilon - s.epsilon, 0.0):.3f}",
            f"{s.delta:.1e}" if s.delta else "—",
            str(s.runs),
            str(s.rounds),
            str(s.refusals),
        )
    console.print(table)
    rounds, refusals = ledger.recent(10)
    if rounds:
        recent = Table(title="Recent rounds")
        for col in ("when", "dataset", "run", "round", "run epsilon", "dataset epsilon", "state"):
            recent.add_column(col)
        for _id, when, dataset, run_id, rnd, run_eps, ds_eps, state in rounds:
            recent.add_row(
                when, dataset, run_id, str(rnd), f"{run_eps:.3f}", f"{ds_eps:.3f}", state
            )
        console.print(recent)
    if refusals:
        refused = Table(title="Recent refusals")
        for col in ("when", "dataset", "run", "round", "reason"):
            refused.add_column(col)
        for _id, when, dataset, run_id, rnd, reason in refusals:
            refused.add_row(when, dataset, run_id, str(rnd), reason)
        console.print(refused)
    if not rounds and not refusals:
        console.print("No rounds trained yet.")
