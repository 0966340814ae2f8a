"""A stand-in for the SuperLink's Control API, for API tests that need no Flower process."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedvault.common.errors import FederationError, NotFound
from fedvault.server.serve.control import NodeInfo, RunStatus

__all__ = ["FakeFederation"]


class FakeFederation:
    """Records every call; ``fail`` makes the next calls raise FederationError."""

    def __init__(self) -> None:
        self.registered: dict[int, tuple[bytes, str]] = {}
        self.online: set[int] = set()
        self.unregistered: list[int] = []
        self.started: list[tuple[Path, dict[str, Any]]] = []
        self.run_ids: list[int] = []
        self.statuses: dict[int, RunStatus] = {}
        self.stopped: list[int] = []
        self.fail = False
        # Flower's ids are unsigned 64-bit, often above 2**63 (past a signed BIGINT).
        self._next = 2**64 - 1000

    def _check(self) -> None:
        if self.fail:
            raise FederationError("Control API call to the SuperLink failed: connection refused")

    def register_node(self, public_key_openssh: bytes, *, name: str) -> int:
        self._check()
        self._next += 1
        self.registered[self._next] = (public_key_openssh, name)
        return self._next

    def unregister_node(self, node_id: int) -> None:
        self._check()
        self.registered.pop(node_id, None)
        self.unregistered.append(node_id)

    def nodes(self) -> list[NodeInfo]:
        self._check()
        return [
            NodeInfo(node_id, name, "online" if node_id in self.online else "registered")
            for node_id, (_, name) in self.registered.items()
        ]

    def start_run(self, app_dir: Path, run_config: Mapping[str, Any]) -> int:
        self._check()
        self._next += 1
        self.started.append((app_dir, dict(run_config)))
        self.run_ids.append(self._next)
        self.statuses[self._next] = RunStatus("running", "", "")
        return self._next

    def run_status(self, run_id: int) -> RunStatus:
        self._check()
        if run_id not in self.statuses:
            raise NotFound(f"The SuperLink has no run {run_id}.")
        return self.statuses[run_id]

    def finish(self, run_id: int, sub_status: str = "completed", details: str = "") -> None:
        self.statuses[run_id] = RunStatus("finished", sub_status, details)

    def stop_run(self, run_id: int) -> bool:
        self._check()
        if self.run_status(run_id).status == "finished":
            return False
        self.stopped.append(run_id)
        self.finish(run_id, "stopped")
        return True
