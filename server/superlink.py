"""A supervised Flower SuperLink and the Control API calls fedvault makes to it."""

from __future__ import annotations

import json
import logging
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from fedvault.common.errors import FederationError, ProcessError
from fedvault.common.flower_cmd import ConfigValue, config_args, superlink_command
from fedvault.common.processes import ManagedProcess, flower_env, tail

__all__ = ["NodeInfo", "RunStatus", "SuperLink"]

log = logging.getLogger(__name__)
CONNECTION = "fedvault"


@dataclass(frozen=True)
class NodeInfo:
    node_id: int
    name: str
    status: str  # "registered", "online", "offline" or "unregistered"


@dataclass(frozen=True)
class RunStatus:
    status: str  # "pending", "starting", "running" or "finished"
    sub_status: str  # once finished: "completed", "failed" or "stopped"
    details: str


class SuperLink:
    """Start, query and stop one SuperLink bound to ``host:port`` (TLS + node auth).

    Args:
        workdir: holds the SuperLink's database, its ``FLWR_HOME`` and logs.
        ca, cert, key: the CA certificate and the server's certificate and key (PEM).
        host, port: where the SuperLink listens; keep the host on loopback (its Control
            API is unauthenticated).
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
        self.flwr_home = workdir / "flwr-home"
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        (self.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "{self.address}"\nroot-certificates = "{ca}"\n'
        )
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
        context = ssl.create_default_context(cafile=str(self.ca))
        deadline = time.monotonic() + timeout
        url = f"https://{self.address}/health"
        while time.monotonic() < deadline:
            self.process.check_alive()
            try:
                with urllib.request.urlopen(url, context=context, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        raise ProcessError(
            f"The SuperLink did not become healthy within {timeout:g} s. End of its log:\n"
            f"{tail(self.log_path)}"
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    # -- Control API -------------------------------------------------------------------
    @contextmanager
    def _control(self) -> Iterator[Any]:
        from flwr.supercore.control import ControlHttpClient

        client = ControlHttpClient.from_server_address(
            server_address=self.address,
            insecure=False,
            root_certificates=str(self.ca),
            interceptors=[],
        )
        try:
            yield client
        except Exception as e:
            if isinstance(e, FederationError):
                raise
            raise FederationError(f"Control API call to the SuperLink failed: {e}") from e
        finally:
            client.close()

    def register_node(self, public_key_openssh: bytes, *, name: str) -> int:
        """Allow the holder of this key to join; returns the node id Flower assigns."""
        from flwr.proto.control_pb2 import RegisterNodeRequest
        from flwr.supercore.primitives.asymmetric import public_key_to_bytes

        try:
            key = serialization.load_ssh_public_key(public_key_openssh)
        except ValueError as e:
            raise FederationError(f"Node key for {name!r} is not an OpenSSH public key: {e}") from e
        with self._control() as c:
            request = RegisterNodeRequest(public_key=public_key_to_bytes(key), name=name)  # type: ignore[arg-type]
            return int(c.RegisterNode(request).node_id)

    def unregister_node(self, node_id: int) -> None:
        from flwr.proto.control_pb2 import UnregisterNodeRequest

        with self._control() as c:
            c.UnregisterNode(UnregisterNodeRequest(node_id=node_id))

    def nodes(self) -> list[NodeInfo]:
        from flwr.proto.control_pb2 import ListNodesRequest

        with self._control() as c:
            return [
                NodeInfo(int(n.node_id), n.name, n.status)
                for n in c.ListNodes(ListNodesRequest()).nodes_info
            ]

    def run_status(self, run_id: int) -> RunStatus:
        from flwr.proto.control_pb2 import ListRunsRequest

        with self._control() as c:
            status = c.ListRuns(ListRunsRequest(run_id=run_id)).run_dict[run_id].status
            return RunStatus(status.status, status.sub_status, status.details)

    # -- runs --------------------------------------------------------------------------
    def _flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        # The flwr CLI leaves no children behind for a remote connection: a pipe is safe.
        try:
            return subprocess.run(
                ["flwr", *args],  # noqa: S607 -- flower_env puts this interpreter's bin first on PATH
                env=self.env,
                cwd=self.workdir,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise FederationError(f"`flwr {args[0]}` did not answer within {timeout:g} s") from e

    def start_run(self, app_dir: Path, run_config: Mapping[str, ConfigValue]) -> int:
        """Submit the Flower app in ``app_dir`` with these run-config overrides."""
        args = ["run", str(app_dir), CONNECTION, "--format", "json"]
        if run_config:
            args += ["--run-config", config_args(run_config)]
        done = self._flwr(*args)
        try:
            return int(json.loads(done.stdout)["run-id"])
        except (ValueError, KeyError, TypeError):
            raise FederationError(
                f"Flower refused the run (exit {done.returncode}): "
                f"{(done.stdout + done.stderr).strip()[-2000:]}"
            ) from None

    def stop_run(self, run_id: int) -> None:
        self._flwr("stop", str(run_id), CONNECTION)

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
