"""A supervised Flower SuperLink; its Control API calls live in fedvault.server.serve.control."""

from __future__ import annotations

import logging
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from fedvault.common.errors import FederationError, ProcessError
from fedvault.common.flower_cmd import ConfigValue, superlink_command
from fedvault.common.processes import ManagedProcess, flower_env, tail
from fedvault.server.serve.control import CONNECTION, FederationControl, NodeInfo, RunStatus

__all__ = ["CONNECTION", "NodeInfo", "RunStatus", "SuperLink", "wait_healthy"]

log = logging.getLogger(__name__)


def wait_healthy(url: str, *, ca: Path, process: ManagedProcess, timeout: float) -> None:
    """Wait until ``url`` answers 200 over TLS trusting ``ca``; raise if ``process`` dies."""
    context = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.check_alive()
        try:
            with urllib.request.urlopen(url, context=context, timeout=2) as r:  # noqa: S310 -- https to our own child
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise ProcessError(
        f"{process.name} did not become healthy within {timeout:g} s. End of its log "
        f"({process.log_path}):\n{tail(process.log_path)}"
    )


class SuperLink:
    """Start, query and stop one SuperLink bound to ``host:port`` (TLS + node auth).

    Control API calls (``register_node``, ``nodes``, ``start_run`` ...) go through
    ``self.control``, a `FederationControl`; they are also available on this object.

    Args:
        workdir: holds the SuperLink's database, its ``FLWR_HOME`` and logs.
        ca, cert, key: the CA certificate and the server's certificate and key (PEM).
        host, port: where the SuperLink listens; keep the host on loopback (its Control
            API is unauthenticated).
        env: extra environment for the SuperLink, inherited by its ServerApp processes.
    """

    def __init__(
        self,
        *,
        workdir: Path,
        ca: Path,
        cert: Path,
        key: Path,
        host: str,
        port: int,
        env: Mapping[str, str] | None = None,
    ):
        self.workdir = workdir
        self.ca, self.cert, self.key = ca, cert, key
        self.host, self.port = host, port
        self.address = f"{host}:{port}"
        self.control = FederationControl(self.address, ca, workdir)
        self.flwr_home = self.control.flwr_home
        # ServerApp processes inherit this environment (e.g. FEDVAULT_DATA_DIR).
        self.env = flower_env(self.flwr_home, env)
        self.process: ManagedProcess | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "logs" / "superlink.log"

    def start(self, timeout: float = 60.0) -> None:
        """Start the SuperLink and wait until its health endpoint answers over TLS."""
        command = superlink_command(
            ca=self.ca,
            cert=self.cert,
            key=self.key,
            host=self.host,
            port=self.port,
            database=self.workdir / "superlink.db",
        )
        self.process = ManagedProcess(
            "SuperLink", command, env=self.env, log_path=self.log_path, cwd=self.workdir
        )
        wait_healthy(
            f"https://{self.address}/health", ca=self.ca, process=self.process, timeout=timeout
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    # -- Control API (delegated) ---------------------------------------------------------
    def register_node(self, public_key_openssh: bytes, *, name: str) -> int:
        """Allow the holder of this key to join; returns the node id Flower assigns."""
        return self.control.register_node(public_key_openssh, name=name)

    def unregister_node(self, node_id: int) -> None:
        self.control.unregister_node(node_id)

    def nodes(self) -> list[NodeInfo]:
        return self.control.nodes()

    def run_status(self, run_id: int) -> RunStatus:
        return self.control.run_status(run_id)

    def start_run(self, app_dir: Path, run_config: Mapping[str, ConfigValue]) -> int:
        """Submit the Flower app in ``app_dir`` with these run-config overrides."""
        return self.control.start_run(app_dir, run_config)

    def stop_run(self, run_id: int) -> bool:
        return self.control.stop_run(run_id)

    def wait_run(self, run_id: int, *, timeout: float, poll: float = 1.0) -> RunStatus:
        """Wait for the run to finish; stop it and raise FederationError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None:
                self.process.check_alive()
            status = self.run_status(run_id)
            if status.status == "finished":
                return status
            if time.monotonic() > deadline:
                self.stop_run(run_id)
                raise FederationError(
                    f"Run {run_id} did not finish within {timeout:g} s; stopped it."
                )
            time.sleep(poll)
