"""API fixtures: an app over a fresh data directory and database, and users with tokens."""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session

from fedvault.common.errors import NotFound
from fedvault.common.pki import generate_node_keys
from fedvault.server.api.app import create_app
from fedvault.server.api.services import Services
from fedvault.server.audit.query import EventFilter, query_events
from fedvault.server.core.settings import ServerSettings
from fedvault.server.identity import (
    PrincipalType,
    User,
    add_member,
    add_site,
    create_project,
    create_user,
    ensure_pepper,
    get_project,
    get_site,
    issue_token,
)
from fedvault.server.serve.datadir import init_data_dir
from fedvault.server.store.service import Lineage
from fedvault.server.store.tables import ModelRecord, ModelVersionPublic

Headers = dict[str, str]
MakeUser = Callable[..., tuple[User, Headers]]
Store = Callable[..., ModelVersionPublic]


def bearer(token: str) -> Headers:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> ServerSettings:
    """Test-mode settings over a new data directory (keyring, signing key, pepper)."""
    settings = ServerSettings(
        data_dir=tmp_path / "data", database_url=db_url, mode="test", federation_address=None
    )
    data_dir = init_data_dir(settings)
    ensure_pepper(data_dir)
    return settings


@pytest.fixture
def app(settings: ServerSettings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def api(app: FastAPI) -> Iterator[TestClient]:
    """A client of the running app (lifespan started; no federation attached)."""
    with TestClient(app) as client:
        yield client


@pytest.fixture
def services(api: TestClient) -> Services:
    """The running app's services (tests may swap ``federation`` for a fake)."""
    return api.app.state.services  # type: ignore[attr-defined,no-any-return]


def _ensure_project(session: Session, project_id: str) -> None:
    try:
        get_project(session, project_id)
    except NotFound:
        create_project(session, project_id=project_id, created_by="tests")


def _ensure_site(session: Session, site_id: str) -> None:
    try:
        get_site(session, site_id)
    except NotFound:
        key = generate_node_keys(site_id).public_openssh.decode()
        add_site(session, site_id=site_id, public_key=key, created_by="tests")


def add_user(
    services: Services,
    role: str,
    *,
    user_id: str,
    projects: Iterable[str] = (),
    site_id: str | None = None,
) -> tuple[User, Headers]:
    """Create a user with a role, projects and a fresh token: ``(user, auth headers)``.

    Site operators get site ``site-a`` unless ``site_id`` says otherwise. Projects and
    sites are created as needed.
    """
    if role == "site_operator" and site_id is None:
        site_id = "site-a"
    with Session(services.engine) as session:
        if site_id is not None:
            _ensure_site(session, site_id)
        user = create_user(session, user_id=user_id, role=role, created_by="tests", site_id=site_id)
        for project in projects:
            _ensure_project(session, project)
            add_member(session, project_id=project, user_id=user_id, by="tests")
        session.refresh(user)
        session.expunge(user)
    return user, new_token(services, user_id)


def new_token(services: Services, user_id: str) -> Headers:
    """Auth headers with a new token of ``user_id``."""
    with Session(services.engine) as session:
        token, _ = issue_token(
            session,
            pepper=services.pepper,
            principal_type=PrincipalType.USER.value,
            principal_id=user_id,
            created_by="tests",
        )
    return bearer(token)


@pytest.fixture
def make_user(services: Services) -> MakeUser:
    """``make_user("data_scientist", projects=["alpha"])``: see ``add_user``."""
    counter = itertools.count(1)

    def make(role: str, *, user_id: str | None = None, **kwargs: Any) -> tuple[User, Headers]:
        user_id = user_id or f"{role.replace('_', '-')}-{next(counter)}"
        return add_user(services, role, user_id=user_id, **kwargs)

    return make


@pytest.fixture
def admin(make_user: MakeUser) -> Headers:
    """Auth headers of an admin."""
    return make_user("admin", user_id="root")[1]


@pytest.fixture
def audit_events(services: Services) -> Callable[..., list[dict[str, Any]]]:
    """The audit events recorded so far, oldest first: ``audit_events(action="user.create")``."""

    def events(**filters: Any) -> list[dict[str, Any]]:
        return query_events(services.engine, EventFilter(**filters), limit=1000).events

    return events


@pytest.fixture
def store_model(services: Services) -> Store:
    """Store a version of a model in a project, trained by sites with these export rules."""

    def put(
        model_id: str,
        *,
        project: str | None = "alpha",
        data: bytes = b"weights",
        exports: tuple[bool, ...] = (True, True),
        parent: tuple[str, int] | None = None,
    ) -> ModelVersionPublic:
        with Session(services.engine) as session:
            if session.get(ModelRecord, model_id) is None:
                session.add(ModelRecord(id=model_id, project=project, created_by="tests"))
                session.commit()
        sites = [
            {"site": f"site-{i}", "epsilon": 1.5, "allow-export": ok, "history": [[1.1, 0.1, 9]]}
            for i, ok in enumerate(exports)
        ]
        lineage = Lineage(
            run_id="trial",
            round=1,
            sites=sites,
            dp={"target-epsilon": 4.0},
            metrics={"accuracy": 0.9},
            config={"num-server-rounds": 1},
            parent=parent,
        )
        return services.store.put(model_id, io.BytesIO(data), lineage=lineage, creator="trial")

    return put
