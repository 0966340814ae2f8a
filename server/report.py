"""Progress of a run as JSON lines, for whoever launched it (the demo, later the admin API)."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["RunReporter"]

log = logging.getLogger(__name__)


class RunReporter:
    """Append one JSON object per event to ``path`` (no-op when ``path`` is empty).

    Each line is flushed and fsynced so a reader polling the file sees whole events.
    """

    def __init__(self, path: str):
        self.path = Path(path) if path else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, event: str, **fields: Any) -> None:
        record = {"event": event, "time": time.time(), **fields}
        log.info("%s %s", event, fields)
        if self.path is None:
            return
        line = json.dumps(record, allow_nan=True, default=str) + "\n"
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
