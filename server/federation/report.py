"""Progress of a run as JSON lines, for whoever launched it (the demo, later the admin API)."""

from __future__ import annotations

import json
import logging
import os
import time
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from fedvault.server.audit.run_events import RunAudit

__all__ = ["RunReporter"]

log = logging.getLogger(__name__)


class _Default(Enum):
    FROM_SETTINGS = "from-settings"


# RunReporter's default: audit into the configured data directory, if there is one.
FROM_SETTINGS = _Default.FROM_SETTINGS


class RunReporter:
    """Append one JSON object per event to ``path`` (no-op when ``path`` is empty).

    Each line is flushed and fsynced so a reader polling the file sees whole events.

    Args:
        path: the JSON-lines file, or "" for none.
        audit: where run events are also recorded as audit events, each committed before
            the event is reported; by default the data directory's audit log if the
            server settings name one (``FEDVAULT_DATA_DIR``), None for no audit.
    """

    def __init__(
        self,
        path: str,
        *,
        audit: RunAudit | Literal[_Default.FROM_SETTINGS] | None = FROM_SETTINGS,
    ):
        self.path = Path(path) if path else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.audit = RunAudit.from_settings() if audit is FROM_SETTINGS else audit

    def emit(self, event: str, **fields: Any) -> None:
        if self.audit is not None:
            self.audit.record(event, fields)
        record = {"event": event, "time": time.time(), **fields}
        log.info("%s %s", event, fields)
        if self.path is None:
            return
        line = json.dumps(record, allow_nan=True, default=str) + "\n"
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
