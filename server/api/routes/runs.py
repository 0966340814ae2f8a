"""Run routes: submit a run to a project, list a project's runs, follow one, stop one."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request
from pydantic import Field

from fedvault.common.errors import NotFound
from fedvault.server.api.deps import (
    CurrentPrincipal,
    ServicesDep,
    SessionDep,
    audit_note,
    not_found,
    require,
)
from fedvault.server.api.schemas import ERROR_RESPONSES, IdPath, PublicModel, RequestModel
from fedvault.server.authz.engine import Resource
from fedvault.server.federation.app_definition import APP_DIR
from fedvault.server.identity import service as identity
from fedvault.server.runs import progress
from fedvault.server.runs import service as runs
from fedvault.server.runs.tables import RunRecord

__all__ = ["RunCreate", "RunDetail", "RunPublic", "project_resource", "router", "run_resource"]

router = APIRouter(prefix="/v1", tags=["runs"], responses=ERROR_RESPONSES)

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_REF = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(:[1-9][0-9]{0,9})?$"
_RUN_ID = r"^run-[0-9a-f]{12}$"
_HIDDEN_CONFIG = frozenset({"report-path"})  # a server path: not the caller's business


class RunCreate(RequestModel):
    """A run to start: what to train, on what, and with which privacy guarantees.

    Keys left out take the app's defaults; all values are checked before the run starts.
    """

    name: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$",
        description="Run name (default: the run id). Reusing a finished run's name resumes it.",
    )
    rounds: int = Field(ge=1, le=10_000, description="Federated rounds.")
    dataset: str = Field(
        min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$", description="Dataset label."
    )
    model: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$", description="Model architecture.")
    model_name: str | None = Field(default=None, pattern=_NAME)
    init_from: str | None = Field(default=None, pattern=_REF, description="MODEL or MODEL:N.")
    input_shape: str | None = Field(
        default=None, pattern=r"^[1-9][0-9]{0,5}(,[1-9][0-9]{0,5}){0,7}$", description="'1,8,8'."
    )
    num_classes: int | None = Field(default=None, ge=1, le=1_000_000)
    target_epsilon: float | None = Field(default=None, gt=0, le=1e6)
    target_delta: float | None = Field(default=None, gt=0, lt=1)
    noise_multiplier: float | None = Field(
        default=None, gt=0, le=1e6, description="Fixed noise instead of a target epsilon."
    )
    max_grad_norm: float | None = Field(default=None, gt=0, le=1e6)
    accountant: Literal["prv", "rdp"] | None = None
    min_sites: int | None = Field(default=None, ge=1, le=10_000)
    local_epochs: int | None = Field(default=None, ge=1, le=10_000)
    batch_size: int | None = Field(default=None, ge=1, le=1_000_000)
    optimizer: Literal["sgd", "adam"] | None = None
    learning_rate: float | None = Field(default=None, gt=0, le=1e3)
    momentum: float | None = Field(default=None, ge=0, lt=1)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    checkpoint_every: int | None = Field(default=None, ge=1, le=10_000)
    fraction_evaluate: float | None = Field(default=None, ge=0, le=1)
    wait_timeout: float | None = Field(default=None, gt=0, le=86_400)
    round_timeout: float | None = Field(default=None, gt=0, le=86_400)
    non_iid_alpha: float | None = Field(default=None, ge=0, le=1e6)

    def overrides(self) -> dict[str, Any]:
        """The run-config keys (kebab-case) this request sets."""
        values = self.model_dump(exclude_none=True, exclude={"name"})
        values["num-server-rounds"] = values.pop("rounds")
        if "noise_multiplier" in values and "target_epsilon" not in values:
            values["target_epsilon"] = 0.0  # fixed noise: no epsilon target (0 = unset)
        return {key.replace("_", "-"): value for key, value in values.items()}


class RunPublic(PublicModel):
    """A run as recorded: its state is refreshed from the SuperLink when it is read."""

    id: str
    project: str
    name: str
    state: str
    details: str
    config: dict[str, Any]
    created_by: str
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, record: RunRecord) -> RunPublic:
        return cls(**_fields(record))


class RunDetail(RunPublic):
    """A run with its progress: per-round metrics and the model versions it stored."""

    rounds: list[dict[str, Any]]
    models: list[str]
    failure: str | None
    summary: dict[str, Any] | None


def _fields(record: RunRecord) -> dict[str, Any]:
    config = {k: v for k, v in (record.config or {}).items() if k not in _HIDDEN_CONFIG}
    return {
        "id": record.id,
        "project": record.project,
        "name": record.name,
        "state": record.state,
        "details": record.details,
        "config": config,
        "created_by": record.created_by,
        "created_at": record.created_at,
        "finished_at": record.finished_at,
    }


def project_resource(project: IdPath, session: SessionDep) -> Resource:
    """The project named in the path (target of run:create and run:list)."""
    try:
        found = identity.get_project(session, project)
    except NotFound:
        raise not_found("Project", project) from None
    return Resource("Project", found.id, project=found.id)


RunId = Annotated[str, Path(pattern=_RUN_ID, description="A run id, e.g. run-0123456789ab.")]


def run_resource(run_id: RunId, session: SessionDep) -> Resource:
    """The run named in the path, in its project."""
    try:
        record = runs.get_run(session, run_id)
    except NotFound:
        raise not_found("Run", run_id) from None
    return Resource("Run", record.id, project=record.project)


@router.post("/projects/{project}/runs", status_code=201, response_model=RunPublic)
def submit_run(
    project: IdPath,
    body: RunCreate,
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    services: ServicesDep,
    _: Annotated[Resource, Depends(require("run:create", project_resource))],
) -> RunPublic:
    """Record the run and start it on the SuperLink (503 if the federation is down)."""
    federation = services.require_federation()
    record = runs.submit_run(
        session,
        project=project,
        name=body.name,
        overrides=body.overrides(),
        created_by=principal.id,
        federation=federation,
        data_dir=services.settings.require_data_dir(),
        app_dir=APP_DIR,
    )
    audit_note(request, run_id=record.id, name=record.name, rounds=body.rounds)
    return RunPublic.of(record)


@router.get("/projects/{project}/runs", response_model=list[RunPublic])
def list_runs(
    project: IdPath,
    session: SessionDep,
    services: ServicesDep,
    _: Annotated[Resource, Depends(require("run:list", project_resource))],
) -> list[RunPublic]:
    """The project's runs, newest first."""
    records = runs.list_runs(session, project=project)
    return [RunPublic.of(runs.refresh_run(session, r, services.federation)) for r in records]


@router.get("/runs/{run_id}", response_model=RunDetail)
def get_run(
    run_id: RunId,
    session: SessionDep,
    services: ServicesDep,
    _: Annotated[Resource, Depends(require("run:read", run_resource))],
) -> RunDetail:
    """A run's state (from the SuperLink) and its per-round metrics (from its report)."""
    record = runs.refresh_run(session, runs.get_run(session, run_id), services.federation)
    data_dir = services.settings.require_data_dir()
    found = progress.read_progress(progress.report_path(data_dir, record.id))
    return RunDetail(
        **_fields(record),
        rounds=found.rounds,
        models=found.models,
        failure=found.failure,
        summary=found.finished,
    )


@router.post("/runs/{run_id}/stop", response_model=RunPublic)
def stop_run(
    run_id: RunId,
    request: Request,
    session: SessionDep,
    services: ServicesDep,
    _: Annotated[Resource, Depends(require("run:stop", run_resource))],
) -> RunPublic:
    """Stop a run; a run that already ended is answered as it is."""
    federation = services.require_federation()
    record = runs.get_run(session, run_id)
    stopped = runs.stop_run(session, record, federation)
    audit_note(request, stopped=stopped)
    return RunPublic.of(record)
