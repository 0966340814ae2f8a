"""Keep the server's processes running: start in order, restart a crashed one, stop all."""

from __future__ import annotations

import logging
import os
import signal
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from fedvault.common.errors import ProcessError
from fedvault.common.processes import ManagedProcess, tail
from fedvault.server.core.settings import DATA_DIR_ENV, ServerSettings

__all__ = ["ChildSpec", "Supervisor", "launch", "local_url", "server_children", "wait_serving"]

log = logging.getLogger(__name__)


def local_url(scheme: str, host: str, port: int) -> str:
    """The URL that reaches, from this machine, a server bound to ``host:port``."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def wait_serving(
    url: str, *, process: ManagedProcess, ca: Path | None, timeout: float = 60.0
) -> None:
    """Wait until ``url`` answers HTTP (any status); raise if ``process`` dies first.

    With ``ca`` the certificate chain is verified; the host name is not, since the
    server may listen on an address its certificate does not name.
    """
    context = None
    if ca is not None:
        context = ssl.create_default_context(cafile=str(ca))
        context.check_hostname = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.check_alive()
        try:
            with urllib.request.urlopen(url, context=context, timeout=2):  # noqa: S310 -- https or http to our own child
                return
        except urllib.error.HTTPError:
            return  # an HTTP answer, even 404, means it is serving
        except (urllib.error.URLError, OSError):
            time.sleep(0.25)
    raise ProcessError(
        f"{process.name} did not answer at {url} within {timeout:g} s. End of its log "
        f"({process.log_path}):\n{tail(process.log_path)}"
    )


def launch(
    make: Callable[[], ManagedProcess], ready: Callable[[ManagedProcess], None]
) -> ManagedProcess:
    """Start a process with ``make`` and wait with ``ready``; stop it if it never gets ready."""
    process = make()
    try:
        ready(process)
    except BaseException:
        process.stop()
        raise
    return process


@dataclass
class ChildSpec:
    """One supervised process.

    Args:
        name: what the messages call it ("SuperLink", "fleet gateway", "admin API").
        start: starts the process and returns once it serves (raises ProcessError if not).
        where: a short description of where it serves, for progress lines.
    """

    name: str
    start: Callable[[], ManagedProcess]
    where: str = ""
    process: ManagedProcess | None = None
    restarts: deque[float] = field(default_factory=deque)


class _StopRequested(BaseException):
    """Raised in the main thread by SIGTERM/SIGINT to unwind into a clean stop."""


class Supervisor:
    """Run children in order; restart one that exits, within a budget; stop all on a signal.

    Args:
        children: started in this order, stopped in the reverse order.
        max_restarts: restarts allowed per child within ``window`` seconds; one more
            crash stops everything and raises ProcessError.
        window: seconds.
        report: called with one human-readable line per event (start, crash, restart).
        on_ready: called once every child has started.
        poll: seconds between liveness checks.
    """

    def __init__(
        self,
        children: Sequence[ChildSpec],
        *,
        max_restarts: int = 5,
        window: float = 300.0,
        report: Callable[[str], None] = log.info,
        on_ready: Callable[[], None] | None = None,
        poll: float = 0.5,
    ):
        if max_restarts < 0 or window <= 0:
            raise ValueError("max_restarts must be >= 0 and window > 0.")
        self.children = list(children)
        self.max_restarts = max_restarts
        self.window = window
        self.report = report
        self.on_ready = on_ready
        self.poll = poll
        self._stopping = False

    def run(self) -> None:
        """Start every child, then watch them until SIGTERM/SIGINT (returns) or a failure.

        Raises:
            ProcessError: a child did not start, or crashed more often than the budget
                allows; the message names it and quotes the end of its log. Every child
                has been stopped by then.
        """
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for child in self.children:
                self._start(child)
            if self.on_ready is not None:
                self.on_ready()
            while True:
                time.sleep(self.poll)
                for child in self.children:
                    self._check(child)
        except _StopRequested:
            self.report("Stop requested; stopping every process.")
        finally:
            self._stopping = True
            self.stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self._stopping:
            self._stopping = True
            raise _StopRequested

    def _start(self, child: ChildSpec) -> None:
        child.process = child.start()
        self.report(f"{child.name} started (pid {child.process.pid}){child.where}")

    def _check(self, child: ChildSpec) -> None:
        process = child.process
        if process is not None and process.alive():
            return
        status = process.popen.returncode if process is not None else "unknown"
        ending = tail(process.log_path) if process is not None else ""
        if process is not None:
            process.stop()  # reap it and any helpers it left behind
            child.process = None
        now = time.monotonic()
        while child.restarts and now - child.restarts[0] > self.window:
            child.restarts.popleft()
        if len(child.restarts) >= self.max_restarts:
            raise ProcessError(
                f"{child.name} exited with status {status} after {len(child.restarts)} "
                f"restarts in {self.window:g} s; stopped the server. End of its log:\n{ending}"
            )
        child.restarts.append(now)
        attempt = len(child.restarts)
        self.report(
            f"{child.name} exited with status {status}; restarting "
            f"({attempt}/{self.max_restarts} in {self.window:g} s)"
        )
        time.sleep(min(float(attempt - 1), 5.0))  # back off a little after repeated crashes
        try:
            self._start(child)
        except ProcessError as e:
            self.report(f"{child.name} did not come back: {e}")

    def stop_all(self) -> None:
        """Stop the children in reverse order; each is reaped even if another fails."""
        for child in reversed(self.children):
            if child.process is None:
                continue
            try:
                child.process.stop()
            except ProcessError as e:
                log.error("Stopping %s failed: %s", child.name, e)
            child.process = None


def _served_child(
    name: str, command: list[str], *, env: dict[str, str], log_path: Path, url: str, ca: Path | None
) -> ChildSpec:
    def start() -> ManagedProcess:
        return launch(
            lambda: ManagedProcess(name, command, env=env, log_path=log_path, cwd=log_path.parent),
            lambda p: wait_serving(url, process=p, ca=ca),
        )

    return ChildSpec(name, start)


def server_children(settings: ServerSettings, *, insecure_http: bool = False) -> list[ChildSpec]:
    """The SuperLink (loopback), the fleet gateway and the admin API, in start order.

    Args:
        settings: data dir, database, hosts and ports (``ServerSettings``).
        insecure_http: serve the admin API over plain HTTP (the caller checks the mode).
    """
    from fedvault.server.serve.control import ServerPaths
    from fedvault.server.serve.gateway import gateway_command
    from fedvault.server.serve.superlink import SuperLink

    paths = ServerPaths(settings.require_data_dir().resolve())
    data_env = {DATA_DIR_ENV: str(paths.data_dir)}
    if settings.database_url:
        data_env["FEDVAULT_DATABASE_URL"] = settings.database_url
    tls = {"ca": paths.ca, "cert": paths.cert, "key": paths.key}
    link = SuperLink(
        workdir=paths.superlink_dir,
        host="127.0.0.1",
        port=settings.superlink_port,
        env=data_env,
        **tls,
    )

    def start_superlink() -> ManagedProcess:
        try:
            link.start()
        except BaseException:
            link.stop()
            raise
        assert link.process is not None
        return link.process

    gateway = _served_child(
        "fleet gateway",
        gateway_command(
            host=settings.fleet_host,
            port=settings.fleet_port,
            upstream_port=settings.superlink_port,
            **tls,
        ),
        env=dict(os.environ),
        log_path=paths.logs_dir / "gateway.log",
        url=local_url("https", settings.fleet_host, settings.fleet_port),
        ca=paths.ca,
    )
    gateway.where = f" on {settings.fleet_host}:{settings.fleet_port} (sites connect here)"
    api_url = local_url("http" if insecure_http else "https", settings.api_host, settings.api_port)
    api_command = [sys.executable, "-m", "uvicorn", "fedvault.server.api.app:create_app"]
    api_command += ["--factory", "--host", settings.api_host, "--port", str(settings.api_port)]
    # No proxy headers: failed-login rate limits key on the real peer address.
    api_command += ["--no-server-header", "--no-proxy-headers"]
    if not insecure_http:
        api_command += ["--ssl-certfile", str(paths.cert), "--ssl-keyfile", str(paths.key)]
    api_env = {
        **os.environ,
        **data_env,
        "FEDVAULT_MODE": settings.mode,
        "FEDVAULT_FEDERATION_ADDRESS": link.address,
        "FEDVAULT_API_HOST": settings.api_host,
        "FEDVAULT_API_PORT": str(settings.api_port),
        "FEDVAULT_FLEET_HOST": settings.fleet_host,
        "FEDVAULT_FLEET_PORT": str(settings.fleet_port),
        "FEDVAULT_SUPERLINK_PORT": str(settings.superlink_port),
    }
    api = _served_child(
        "admin API",
        api_command,
        env=api_env,
        log_path=paths.logs_dir / "api.log",
        url=f"{api_url}/v1/health",
        ca=None if insecure_http else paths.ca,
    )
    api.where = f" on {api_url}"
    return [
        ChildSpec("SuperLink", start_superlink, f" on {link.address} (loopback only)"),
        gateway,
        api,
    ]
