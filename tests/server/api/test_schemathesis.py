"""Property-based API test: generated requests to every endpoint never get a server error."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from fedvault.server.api.app import create_app
from fedvault.server.core.settings import ServerSettings
from fedvault.server.identity import ensure_pepper
from fedvault.server.serve.datadir import init_data_dir

from .conftest import Headers, add_user
from .fake_federation import FakeFederation

EXAMPLES = 20
STATUSES: Counter[tuple[str, int]] = Counter()


class _Proxy:
    """What schemathesis calls: the app the ``admin_headers`` fixture started.

    Its lifespan is the fixture's, so schemathesis's lifespan events are answered here;
    before the fixture runs (at collection) only the OpenAPI document is served, from an
    app that needs no services for it.
    """

    def __init__(self, document: dict[str, Any]):
        self.document = document
        self.app: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if self.app is None:
            await JSONResponse(self.document)(scope, receive, send)
            return
        await self.app(scope, receive, send)


# (schemathesis.pytest.from_fixture does not work with pytest 9: it sets Node._nodeid, so
# the schema is loaded at collection.)
PROXY = _Proxy(create_app(ServerSettings(data_dir=Path("unused"), mode="test")).openapi())
schema = schemathesis.openapi.from_asgi("/openapi.json", PROXY)


@pytest.fixture(scope="module")
def admin_headers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Headers]:
    """Start the app over a SQLite data dir with a fake federation; an admin's headers."""
    root: Path = tmp_path_factory.mktemp("schemathesis")
    config = ServerSettings(data_dir=root / "data", mode="test")
    ensure_pepper(init_data_dir(config))
    app = create_app(config)
    with TestClient(app) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        services.federation = FakeFederation()
        _, headers = add_user(services, "admin", user_id="root", projects=["alpha"])
        PROXY.app = app
        yield headers


def _check_operation(operation: Any, headers: Headers, mode: GenerationMode) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
    )
    def check(case: Any) -> None:
        response = case.call(headers=headers)
        STATUSES[(case.operation.label, response.status_code)] += 1
        case.validate_response(response, checks=[not_a_server_error])

    check()


def test_no_server_errors(admin_headers: Headers) -> None:
    """Every operation, EXAMPLES generated requests each (one test: the suite runs on
    pytest-xdist, where schemathesis's per-operation parametrization collapses)."""
    for result in schema.get_all_operations():
        _check_operation(result.ok(), admin_headers, GenerationMode.POSITIVE)
        try:  # requests that break the schema; none exist for an operation without inputs
            _check_operation(result.ok(), admin_headers, GenerationMode.NEGATIVE)
        except Unsatisfiable:
            continue


def test_cases_were_run() -> None:
    """A summary of what the generated requests got (run with -s to see it)."""
    total = sum(STATUSES.values())
    errors = sum(n for (_, status), n in STATUSES.items() if status >= 500)
    by_status = Counter()
    for (_, status), n in STATUSES.items():
        by_status[status] += n
    print(f"\nschemathesis: {total} cases, {errors} server errors, by status {dict(by_status)}")
    unauthenticated = sorted((op, n) for (op, status), n in STATUSES.items() if status == 401)
    print(f"401 by operation: {unauthenticated}")
    operations = {result.ok().label for result in schema.get_all_operations()}
    exercised = {op for op, _ in STATUSES}
    assert exercised == operations, f"never called: {sorted(operations - exercised)}"
    assert total >= len(operations) * 5, total
    assert errors == 0
