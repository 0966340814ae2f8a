"""Runs submitted through the admin API and started on the Flower SuperLink."""

from __future__ import annotations

from fedvault.server.runs.progress import RunProgress, read_progress, report_path
from fedvault.server.runs.service import (
    DEFAULT_PROJECT,
    RunControl,
    get_run,
    list_runs,
    model_project,
    refresh_run,
    stop_run,
    submit_run,
)
from fedvault.server.runs.tables import RunRecord, RunState

__all__ = [
    "DEFAULT_PROJECT",
    "RunControl",
    "RunProgress",
    "RunRecord",
    "RunState",
    "get_run",
    "list_runs",
    "model_project",
    "read_progress",
    "refresh_run",
    "report_path",
    "stop_run",
    "submit_run",
]
