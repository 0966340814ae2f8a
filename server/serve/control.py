"""Client for the SuperLink's Control API: node allow-list, runs and their status."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from fedvault.common.errors import FederationError, FedvaultError, NotFound
from fedvault.common.flower_cmd import ConfigValue, config_args
from fedvault.common.processes import flower_env
from fedvault.server.core.settings import ServerSettings

__all__ = [
    "CONNECTION",
    "FederationControl",
    "NodeInfo",
    "RunStatus",
    "ServerPaths",
    "control_from_settings",
]

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


@dataclass(frozen=True)
class ServerPaths:
    """Where `fedvault server init` puts TLS material and the server processes keep state."""

    data_dir: Path

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def ca(self) -> Path:
        """The CA certificate sites and API clients trust."""
        return self.tls_dir / "ca.pem"

    @property
    def cert(self) -> Path:
        return self.tls_dir / "server.pem"

    @property
    def key(self) -> Path:
        return self.tls_dir / "server.key"

    @property
    def superlink_dir(self) -> Path:
        """The SuperLink's database, FLWR_HOME and log."""
        return self.data_dir / "superlink"

    @property
    def control_dir(self) -> Path:
        """FLWR_HOME of Control API clients that do not own the SuperLink (the admin API)."""
        return self.data_dir / "control"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"


class FederationControl:
    """Calls to one SuperLink's Control API; owns no process, so any process may use it.

    Args:
        address: ``host:port`` of the SuperLink (loopback: its Control API has no
            authentication of its own).
        ca: the CA certificate that signed the SuperLink's certificate.
        workdir: holds the ``FLWR_HOME`` the ``flwr`` CLI reads when submitting runs.
    """

    def __init__(self, address: str, ca: Path, workdir: Path):
        self.address = address
        self.ca = ca
        self.workdir = workdir
        self.flwr_home = workdir / "flwr-home"
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        config = (
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "{address}"\nroot-certificates = "{ca}"\n'
        )
        path = self.flwr_home / "config.toml"
        if not path.exists() or path.read_text() != config:
            path.write_text(config)
        self.env = flower_env(self.flwr_home)

    @contextmanager
    def _client(self) -> Iterator[Any]:
        from flwr.supercore.control import ControlHttpClient

        client = ControlHttpClient.from_server_address(
            server_address=self.address,
            insecure=False,
            root_certificates=str(self.ca),
            interceptors=[],
        )
        try:
            yield client
        except FedvaultError:
            raise
        except Exception as e:
            detail = getattr(getattr(e, "response", None), "text", "") or str(e)
            raise FederationError(
                f"Control API call to the SuperLink at {self.address} failed: {detail}"
            ) from e
        finally:
            client.close()

    def register_node(self, public_key_openssh: bytes, *, name: str) -> int:
        """Allow the holder of this key to join; returns the node id Flower assigns."""
        from flwr.proto.control_pb2 import RegisterNodeRequest
        from flwr.supercore.primitives.asymmetric import public_key_to_bytes

        try:
            key = serialization.load_ssh_public_key(public_key_openssh)
        except (ValueError, TypeError) as e:
            raise FederationError(f"Node key for {name!r} is not an OpenSSH public key: {e}") from e
        with self._client() as c:
            request = RegisterNodeRequest(public_key=public_key_to_bytes(key), name=name)  # type: ignore[arg-type]
            return int(c.RegisterNode(request).node_id)

    def unregister_node(self, node_id: int) -> None:
        """Take the node off the allow-list; it can no longer join or pull messages."""
        from flwr.proto.control_pb2 import UnregisterNodeRequest

        with self._client() as c:
            c.UnregisterNode(UnregisterNodeRequest(node_id=node_id))

    def nodes(self) -> list[NodeInfo]:
        """Every registered node with its current status."""
        from flwr.proto.control_pb2 import ListNodesRequest

        with self._client() as c:
            return [
                NodeInfo(int(n.node_id), n.name, n.status)
                for n in c.ListNodes(ListNodesRequest()).nodes_info
            ]

    def run_status(self, run_id: int) -> RunStatus:
        """The run's status as the SuperLink knows it.

        Raises:
            NotFound: the SuperLink has no run with this id.
        """
        from flwr.proto.control_pb2 import ListRunsRequest

        with self._client() as c:
            runs = c.ListRuns(ListRunsRequest(run_id=run_id)).run_dict
            if run_id not in runs:
                raise NotFound(f"The SuperLink has no run {run_id}.")
            status = runs[run_id].status
            return RunStatus(status.status, status.sub_status, status.details)

    def stop_run(self, run_id: int) -> bool:
        """Stop the run; False when it had already finished (nothing to stop)."""
        from flwr.proto.control_pb2 import StopRunRequest

        if self.run_status(run_id).status == "finished":
            return False
        with self._client() as c:
            return bool(c.StopRun(StopRunRequest(run_id=run_id)).success)

    def start_run(self, app_dir: Path, run_config: Mapping[str, ConfigValue]) -> int:
        """Submit the Flower app in ``app_dir`` with these run-config overrides; the run id."""
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


def control_from_settings(settings: ServerSettings) -> FederationControl | None:
    """The Control API client `fedvault server start` set up, or None outside it.

    The supervisor sets ``FEDVAULT_FEDERATION_ADDRESS``; the CA is the data directory's
    (``tls/ca.pem``, made by `fedvault server init`).
    """
    if not settings.federation_address:
        return None
    paths = ServerPaths(settings.require_data_dir())
    return FederationControl(settings.federation_address, paths.ca, paths.control_dir)
