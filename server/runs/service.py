"""Runs: record a submission, start it on the SuperLink, follow its state and its report."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from sqlmodel import Session, col, select

from fedvault.common.errors import AlreadyExists, ConfigError, FedvaultError, NotFound
from fedvault.common.run_config import RunSettings, Scalar
from fedvault.server.core.time import utcnow
from fedvault.server.identity.tables import Project
from fedvault.server.runs.progress import report_path
from fedvault.server.runs.tables import RunRecord, RunState
from fedvault.server.store.service import parse_ref
from fedvault.server.store.tables import ModelRecord

__all__ = [
    "DEFAULT_PROJECT",
    "RESERVED_KEYS",
    "TERMINAL",
    "RunControl",
    "get_run",
    "list_runs",
    "model_project",
    "refresh_run",
    "stop_run",
    "submit_run",
]

log = logging.getLogger("fedvault.server.runs")

DEFAULT_PROJECT = "default"  # the project of models stored before projects existed
RESERVED_KEYS = frozenset({"project", "run-name", "report-path"})  # set by the server only
TERMINAL = frozenset({RunState.COMPLETED, RunState.FAILED, RunState.STOPPED})
_RUN_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_FLOWER_SUB_STATES = {
    "completed": RunState.COMPLETED,
    "failed": RunState.FAILED,
    "stopped": RunState.STOPPED,
}


class RunControl(Protocol):
    """The part of the SuperLink's Control API that runs need."""

    def start_run(self, app_dir: Path, run_config: Mapping[str, Scalar]) -> int: ...

    def stop_run(self, run_id: int) -> bool: ...

    def run_status(self, run_id: int) -> Any: ...


def model_project(model: ModelRecord) -> str:
    """The project a model belongs to (models without one belong to ``default``)."""
    return model.project or DEFAULT_PROJECT


def _check_name(name: str) -> str:
    if not _RUN_NAME.fullmatch(name):
        raise ConfigError(
            f"Invalid run name {name!r}: use 1-64 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    return name


def _settings(
    overrides: Mapping[str, Any], *, project: str, name: str, report: Path
) -> RunSettings:
    reserved = sorted(RESERVED_KEYS & set(overrides))
    if reserved:
        raise ConfigError(
            f"Run-config keys {reserved} are set by the server; leave them out "
            "(the project comes from the URL, the run name from 'name')."
        )
    config = {**overrides, "project": project, "run-name": name, "report-path": str(report)}
    settings = RunSettings.from_run_config(config)
    _check_model(settings)
    return settings


def _check_model(settings: RunSettings) -> None:
    """Build the run's model without memory (meta device): a bad one fails now, not mid-run."""
    # Imported here: torch costs seconds, which the API's start-up should not pay.
    import torch

    from fedvault.common.nets import build_model

    shape, classes = settings.model_io()
    try:
        with torch.device("meta"):
            build_model(settings.model, input_shape=shape, num_classes=classes)
    except FedvaultError:
        raise
    except (RuntimeError, ValueError) as e:
        raise ConfigError(
            f"Model {settings.model!r} cannot be built for input shape {shape} and "
            f"{classes} classes: {e}"
        ) from e


def _claim_model(session: Session, *, model_id: str, project: str, by: str) -> None:
    """Reserve ``model_id`` for ``project``, or refuse if another project owns it."""
    model = session.get(ModelRecord, model_id)
    if model is None:
        session.add(ModelRecord(id=model_id, project=project, created_by=by))
    elif model_project(model) != project:
        raise AlreadyExists(
            f"The model name {model_id!r} belongs to another project; choose another "
            "'model_name' for this run."
        )


def _check_init_from(session: Session, ref: str, *, project: str) -> None:
    model_id, _ = parse_ref(ref)
    model = session.get(ModelRecord, model_id)
    if model is None or model_project(model) != project:
        raise NotFound(
            f"No model {model_id!r} in project {project!r} to start from; "
            "`GET /v1/models` lists the models you can use."
        )


def _check_name_free(session: Session, *, name: str, project: str) -> None:
    """A run name may be reused only to resume a finished run of the same project."""
    for other in session.exec(select(RunRecord).where(RunRecord.name == name)):
        if other.project != project:
            raise AlreadyExists(f"The run name {name!r} is taken; choose another name.")
        if other.state not in TERMINAL:
            raise AlreadyExists(
                f"Run {other.id} named {name!r} is still {other.state}; stop it first or "
                "choose another name."
            )


def submit_run(
    session: Session,
    *,
    project: str,
    overrides: Mapping[str, Any],
    created_by: str,
    federation: RunControl,
    data_dir: Path,
    app_dir: Path,
    name: str | None = None,
) -> RunRecord:
    """Record a run and start it on the SuperLink.

    A name that was used before resumes that run from its newest stored round (the
    ServerApp does this); names are unique across projects.

    Raises:
        NotFound: no such project, or ``init-from`` names a model outside the project.
        ConfigError: the configuration is invalid.
        AlreadyExists: the name or the model name belongs to someone else.
        FederationError: the SuperLink refused or could not be reached; the run is kept
            as ``failed`` with the reason.
    """
    if session.get(Project, project) is None:
        raise NotFound(f"No project {project!r}.")
    run_id = f"run-{secrets.token_hex(6)}"
    name = _check_name(name) if name is not None else run_id
    report = report_path(data_dir, run_id)
    settings = _settings(overrides, project=project, name=name, report=report)
    _check_name_free(session, name=name, project=project)
    if settings.init_from:
        _check_init_from(session, settings.init_from, project=project)
    _claim_model(session, model_id=settings.stored_model_name, project=project, by=created_by)
    config = settings.to_run_config()
    record = RunRecord(id=run_id, project=project, name=name, config=config, created_by=created_by)
    session.add(record)
    session.commit()
    report.parent.mkdir(parents=True, exist_ok=True)
    try:
        flower_run_id = federation.start_run(app_dir, config)
    except FedvaultError as e:
        _finish(session, record, RunState.FAILED, f"The SuperLink did not start the run: {e}")
        raise
    record.flower_run_id = flower_run_id
    record.state = RunState.RUNNING
    session.add(record)
    session.commit()
    session.refresh(record)
    log.info("Run %s (%s) started as Flower run %d", run_id, name, flower_run_id)
    return record


def _finish(session: Session, record: RunRecord, state: RunState, details: str) -> None:
    record.state = state
    record.details = details[:2000]
    record.finished_at = utcnow()
    session.add(record)
    session.commit()
    session.refresh(record)


def list_runs(session: Session, *, project: str) -> list[RunRecord]:
    """The project's runs, newest first."""
    query = select(RunRecord).where(RunRecord.project == project)
    return list(session.exec(query.order_by(col(RunRecord.created_at).desc())))


def get_run(session: Session, run_id: str) -> RunRecord:
    """One run by id.

    Raises:
        NotFound: no such run.
    """
    record = session.get(RunRecord, run_id)
    if record is None:
        raise NotFound(f"No run {run_id!r}. `GET /v1/projects/PROJECT/runs` lists them.")
    return record


def refresh_run(session: Session, record: RunRecord, federation: RunControl | None) -> RunRecord:
    """Bring the stored state up to date with the SuperLink, when it can be asked.

    A SuperLink that cannot be reached leaves the stored state as it is; one that no longer
    knows the run (its database was reset) makes the run ``failed``.
    """
    if record.state in TERMINAL or record.flower_run_id is None or federation is None:
        return record
    try:
        status = federation.run_status(record.flower_run_id)
    except NotFound:
        reason = f"The SuperLink no longer knows Flower run {record.flower_run_id}."
        _finish(session, record, RunState.FAILED, reason)
        return record
    except FedvaultError as e:
        log.warning("Could not ask the SuperLink about run %s: %s", record.id, e)
        return record
    if status.status != "finished":
        return record
    state = _FLOWER_SUB_STATES.get(status.sub_status, RunState.FAILED)
    _finish(session, record, state, str(status.details or ""))
    return record


def stop_run(session: Session, record: RunRecord, federation: RunControl) -> bool:
    """Ask the SuperLink to stop a run; False when it had ended already (nothing changes).

    Raises:
        FederationError: the SuperLink could not be reached.
    """
    record = refresh_run(session, record, federation)
    if record.state in TERMINAL:
        return False
    if record.flower_run_id is not None and not federation.stop_run(record.flower_run_id):
        refresh_run(session, record, federation)  # it finished on its own meanwhile
        if record.state in TERMINAL:
            return False
    _finish(session, record, RunState.STOPPED, "Stopped through the admin API.")
    return True
