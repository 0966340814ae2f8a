"""Child processes that are always reaped: output to a log file, SIGTERM then SIGKILL."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from fedvault.common.errors import ProcessError

__all__ = [
    "ManagedProcess",
    "descendants",
    "flower_env",
    "free_port",
    "tail",
    "watchers_of",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def flower_env(flwr_home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for every Flower process fedvault starts.

    Telemetry and update checks off; a private ``FLWR_HOME``; this interpreter's ``bin`` first
    on ``PATH`` (Flower starts ``flower-superexec``/``flwr-*`` helpers by bare name).
    """
    env = dict(os.environ)
    env.update(
        {
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_HOME": str(flwr_home),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update(extra or {})
    return env


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = entry.read_text()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: split after its last ')'
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields and fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry.parent.name))
    found: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo += children.get(child, [])
    return found


def watchers_of(pid: int) -> list[int]:
    """Live processes started with ``--parent-pid PID`` (Flower's SuperExec helpers).

    Once ``pid`` has exited they are no longer its descendants, but still its helpers.
    """
    found = []
    for entry in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = entry.read_bytes().split(b"\0")
        except OSError:
            continue
        for flag, value in itertools.pairwise(args):
            if flag == b"--parent-pid" and value == str(pid).encode():
                found.append(int(entry.parent.name))
    return [p for p in found if _running(p)]


def _reap_or_kill(pids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    remaining = list(pids)
    while remaining and time.monotonic() < deadline:
        remaining = [p for p in remaining if _running(p)]
        if remaining:
            time.sleep(0.1)
    for pid in remaining:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    # SIGKILL is delivered asynchronously: return only once they are really gone.
    deadline = time.monotonic() + 5.0
    while any(_running(p) for p in remaining) and time.monotonic() < deadline:
        time.sleep(0.05)


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] != "Z"


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class ManagedProcess:
    """A long-running child whose output goes to ``log_path``.

    Output never goes to a pipe: Flower's helper processes inherit it and a pipe nobody
    drains can deadlock them. ``stop()`` always reaps the child, which Flower's helpers
    need in order to notice that their parent is gone.
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        log_path: Path,
        cwd: Path | None = None,
    ):
        self.name = name
        self.command = list(command)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            try:
                self.popen = subprocess.Popen(
                    self.command,
                    env=dict(env),
                    cwd=cwd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            except OSError as e:
                raise ProcessError(f"Cannot start {name} ({self.command[0]}): {e}") from e

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check_alive(self) -> None:
        """Raise ProcessError, with the end of its log, if the process has exited."""
        if not self.alive():
            raise ProcessError(
                f"{self.name} exited with status {self.popen.returncode}. End of its log "
                f"({self.log_path}):\n{tail(self.log_path)}"
            )

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise ProcessError(f"{self.name} did not exit within {timeout:g} s") from e

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; always reaps. Returns the status.

        Helpers the process started (Flower's SuperExec and app processes, which watch
        their parent and exit by themselves) get ``timeout`` seconds more, then SIGKILL.
        """
        helpers = sorted(set(descendants(self.popen.pid)) | set(watchers_of(self.popen.pid)))
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        _reap_or_kill(helpers, timeout)
        return int(self.popen.returncode)
