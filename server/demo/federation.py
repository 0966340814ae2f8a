"""A whole federation on this machine: one SuperLink, N SuperNodes, one run, full cleanup."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fedvault.common.errors import FederationError, ProcessError
from fedvault.common.flower_cmd import ConfigValue, supernode_command
from fedvault.common.processes import ManagedProcess, free_port, tail
from fedvault.server.core.settings import DATA_DIR_ENV
from fedvault.server.demo.workspace import Workspace
from fedvault.server.federation.app_definition import APP_DIR
from fedvault.server.serve.superlink import RunStatus, SuperLink

__all__ = ["APP_DIR", "LocalFederation", "follow_report"]

log = logging.getLogger(__name__)

Event = dict[str, Any]


class LocalFederation:
    """Start a SuperLink (TLS, node auth) and SuperNodes; stop all of them on exit.

    Use as a context manager: every process it started is stopped and reaped on the way
    out, whether the body finished, failed or was interrupted.
    """

    def __init__(self, workspace: Workspace, *, data_dir: Path):
        self.workspace = workspace
        self.data_dir = data_dir
        self.superlink = SuperLink(
            workdir=workspace.root / "superlink",
            ca=workspace.ca,
            cert=workspace.cert,
            key=workspace.key,
            host="127.0.0.1",
            port=free_port(),
            env={DATA_DIR_ENV: str(data_dir.resolve())},
        )
        self.supernodes: dict[int, ManagedProcess] = {}
        self.node_ids: dict[int, int] = {}

    def __enter__(self) -> LocalFederation:
        try:
            self.superlink.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop SuperNodes first (they would otherwise retry), then the SuperLink."""
        for site in list(self.supernodes):
            self.supernodes.pop(site).stop()
        self.superlink.stop()

    def register(self, site: int) -> int:
        node_id = self.superlink.register_node(self.workspace.public_key(site), name=f"site-{site}")
        self.node_ids[site] = node_id
        return node_id

    def start_site(self, site: int, node_config: Mapping[str, ConfigValue]) -> ManagedProcess:
        """Start the SuperNode of ``site`` with its own key (registered or not)."""
        command = supernode_command(
            superlink=self.superlink.address,
            ca=self.workspace.ca,
            private_key=self.workspace.node_keys[site],
            port=free_port(),
            node_config=node_config,
        )
        process = ManagedProcess(
            f"SuperNode site-{site}",
            command,
            env=self.superlink.env,
            log_path=self.workspace.root / "logs" / f"site-{site}.log",
            cwd=self.workspace.root,
        )
        self.supernodes[site] = process
        return process

    def wait_online(self, count: int, *, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for site, process in self.supernodes.items():
                if not process.alive():
                    raise ProcessError(
                        f"SuperNode site-{site} exited with status {process.popen.returncode} "
                        f"before joining. End of its log:\n{tail(process.log_path)}"
                    )
            online = sum(1 for n in self.superlink.nodes() if n.status == "online")
            if online >= count:
                return
            if time.monotonic() > deadline:
                raise FederationError(
                    f"Only {online} of {count} sites came online in {timeout:g} s."
                )
            time.sleep(0.5)


def follow_report(
    superlink: SuperLink,
    run_id: int,
    report: Path,
    *,
    on_event: Callable[[Event], None],
    timeout: float,
    poll: float = 0.5,
) -> tuple[RunStatus, list[Event]]:
    """Stream the run's JSON-lines report to ``on_event`` until Flower says it finished."""
    events: list[Event] = []
    offset = 0

    def drain() -> None:
        nonlocal offset
        if not report.exists():
            return
        with report.open("r", encoding="utf-8") as f:
            f.seek(offset)
            for line in iter(f.readline, ""):
                if not line.endswith("\n"):
                    break  # a partial line: read it whole next time
                offset += len(line.encode("utf-8"))
                event = json.loads(line)
                events.append(event)
                on_event(event)

    deadline = time.monotonic() + timeout
    next_check = 0.0
    while True:
        drain()
        if time.monotonic() >= next_check:
            next_check = time.monotonic() + 2.0
            if superlink.process is not None:
                superlink.process.check_alive()
            status = superlink.run_status(run_id)
            if status.status == "finished":
                drain()
                return status, events
        if time.monotonic() > deadline:
            superlink.stop_run(run_id)
            raise FederationError(f"Run {run_id} did not finish within {timeout:g} s; stopped it.")
        time.sleep(poll)
