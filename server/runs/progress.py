"""A run's progress as its ServerApp reports it: one JSON object a line in the data dir."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RunProgress", "read_progress", "report_path"]

log = logging.getLogger("fedvault.server.runs")


@dataclass(frozen=True)
class RunProgress:
    """What a run's JSON-lines report says so far."""

    rounds: list[dict[str, Any]] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    failure: str | None = None
    finished: dict[str, Any] | None = None


def report_path(data_dir: Path, run_id: str) -> Path:
    """Where the ServerApp writes the run's progress, one JSON object a line."""
    return data_dir / "runs" / run_id / "report.jsonl"


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such figures become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def read_progress(path: Path) -> RunProgress:
    """Per-round metrics, stored model versions and the outcome from a run's report."""
    progress = RunProgress()
    if not path.is_file():
        return progress
    rounds, models = progress.rounds, progress.models
    failure, finished = None, None
    with path.open("r", encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break  # the line being written: read it whole next time
            try:
                event = _finite(json.loads(line))
            except json.JSONDecodeError:
                log.warning("Skipping a malformed line in %s", path)
                continue
            kind = event.get("event")
            if kind == "round":
                rounds.append({k: v for k, v in event.items() if k not in ("event", "time")})
            elif kind == "stored" and event.get("model"):
                models.append(str(event["model"]))
            elif kind == "failed":
                failure = str(event.get("reason", ""))
            elif kind == "finished":
                finished = {k: v for k, v in event.items() if k not in ("event", "time")}
    return RunProgress(rounds, models, failure, finished)
