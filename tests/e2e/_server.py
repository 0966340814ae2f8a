"""A real `fedvault server` (init + start) for end-to-end tests, stopped on the way out."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from fedvault.common.processes import ManagedProcess, free_port
from fedvault.server.serve.control import FederationControl, ServerPaths

FEDVAULT = str(Path(sys.executable).parent / "fedvault")
TOKEN = re.compile(r"fvt_[0-9A-Za-z]+")


@dataclass
class Server:
    process: ManagedProcess
    paths: ServerPaths
    token: str
    api: str
    fleet_port: int
    superlink_port: int

    def control(self) -> FederationControl:
        return FederationControl(
            f"127.0.0.1:{self.superlink_port}", self.paths.ca, self.paths.data_dir / "test-control"
        )

    def tls(self) -> ssl.SSLContext:
        """A client context trusting only the server's CA."""
        return ssl.create_default_context(cafile=str(self.paths.ca))

    def log(self) -> str:
        return self.process.log_path.read_text()


def wait_for(condition: Callable[[], bool], *, timeout: float, what: str, server: Server) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    pytest.fail(f"{what} within {timeout:g} s. Server output:\n{server.log()}")


@contextmanager
def running_server(root: Path) -> Iterator[Server]:
    """``fedvault server init`` then ``server start`` in ``root``, on free ports."""
    data = root / "data"
    env = {**os.environ, "COLUMNS": "200", "FEDVAULT_MODE": "production"}
    init = subprocess.run(
        [FEDVAULT, "server", "init", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert init.returncode == 0, init.stderr
    api_port, fleet_port, superlink_port = free_port(), free_port(), free_port()
    ports = ["--api-port", str(api_port), "--fleet-port", str(fleet_port)]
    ports += ["--superlink-port", str(superlink_port)]
    process = ManagedProcess(
        "fedvault server",
        [FEDVAULT, "server", "start", "--data-dir", str(data), *ports],
        env=env,
        log_path=root / "server.log",
    )
    srv = Server(
        process,
        ServerPaths(data),
        TOKEN.findall(init.stdout)[0],
        f"https://127.0.0.1:{api_port}",
        fleet_port,
        superlink_port,
    )
    try:
        wait_for(lambda: "server is up" in srv.log(), timeout=180, what="not up", server=srv)
        yield srv
    finally:
        process.stop()
