"""Authorization decision latency with 10, 100 and 1,000 stored Cedar policies.

Each size stores the default policies plus generated per-project policies of the kinds an
admin writes (data-scientist readers, trainers, and forbids on one user in one project) in
a fresh SQLite database, opens a ``PolicyEngine`` on it, and times ``authorize`` for a mix
of principals (admins, auditors, data scientists in one to three projects, site operators),
actions and resources across projects. A warm-up pass over one sample of requests comes
first; the timed pass then draws a fresh sample from the same population, so the figures
include the engine's policy-subset cache misses that a running server still sees. The
headline is the wall-clock p99 decision time at 1,000 policies (target: <= 0.5 ms); the
thread CPU-time p99 is printed beside it, since on a busy machine the wall-clock tail is
mostly time the process spent waiting for a core.

Second section: the throughput of an authenticated, authorized and audited API GET
(``GET /v1/projects/{id}`` with a data scientist's token: token digest lookup, Cedar
decision, audit event committed before the answer) divided by the same route's handler
served bare (same FastAPI, same database session and query, no token, no policy, no audit),
both in this process through httpx's ASGI transport with concurrent clients, interleaved.
The transport looks for sniffio on every request; where it is not installed, that failed
import is remembered once, so this client-side cost (the same for both apps, which would
pull the ratio towards 1) is left out.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.util
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlmodel import Session

from fedvault.server.authz import store
from fedvault.server.authz.engine import AUDIT_LOG, SERVER, PolicyEngine, Resource
from fedvault.server.authz.tables import PolicyVersion
from fedvault.server.core.db import open_database
from fedvault.server.identity.principal import Principal
from fedvault.server.identity.tables import PrincipalType

if importlib.util.find_spec("sniffio") is None:
    sys.modules["sniffio"] = None  # type: ignore[assignment]  # fail the import at once

SIZES = (10, 100, 1000)
ACTIONS_ON_MODELS = ("model:read", "model:download")
ACTIONS_ON_RUNS = ("run:read", "run:stop")
ACTIONS_ON_PROJECTS = ("project:read", "run:create", "run:list")


def project_policy(n: int, rng: random.Random) -> tuple[str, str]:
    """One generated policy for project ``n``: its name and Cedar text."""
    project = f"proj-{n:04d}"
    kind = n % 4
    if kind == 0:
        text = (
            f'permit (principal is User in Project::"{project}",\n'
            '  action in [Action::"model:read", Action::"model:download", Action::"run:read"],\n'
            f'  resource in Project::"{project}")\n'
            'when { principal.role == "data_scientist" };\n'
        )
        return f"{project}-readers", text
    if kind == 1:
        text = (
            f'permit (principal is User in Project::"{project}",\n'
            '  action in [Action::"run:create", Action::"run:list", Action::"project:read"],\n'
            f'  resource == Project::"{project}")\n'
            'when { principal.role == "data_scientist" };\n'
        )
        return f"{project}-trainers", text
    if kind == 2:
        user = f"user-{rng.randrange(200):03d}"
        text = (
            f'forbid (principal == User::"{user}", action == Action::"model:download",\n'
            f'  resource in Project::"{project}");\n'
        )
        return f"{project}-no-download-{user}", text
    text = (
        f'permit (principal is User in Project::"{project}", action == Action::"run:stop",\n'
        f'  resource in Project::"{project}")\n'
        'when { principal.role == "data_scientist" && resource.project == '
        f'Project::"{project}" }};\n'
    )
    return f"{project}-stoppers", text


def populate(session: Session, *, size: int, seed: int) -> int:
    """Store the defaults plus generated policies until ``size`` named policies exist.

    The generated set is validated against the schema once, then stored in one transaction
    (``store.put`` validates the whole set on every call, which is right for an admin's
    edit but quadratic for a thousand inserts).
    """
    rng = random.Random(seed)
    defaults = store.default_policy_texts()
    generated = dict(project_policy(n, rng) for n in range(size - len(defaults)))
    store.validate_set({**defaults, **generated})
    store.seed_defaults(session, created_by="bench")
    for name, text in generated.items():
        digest = hashlib.sha256(text.encode()).hexdigest()
        session.add(PolicyVersion(name=name, version=1, text=text, sha256=digest, created_by="b"))
    session.commit()
    return len(store.in_force(session))


def population(rng: random.Random, *, projects: int, users: int = 200) -> list[Principal]:
    """Callers: an admin, an auditor, a site operator and data scientists in 1-3 projects."""
    people = [
        Principal(PrincipalType.USER, "root", "admin", frozenset()),
        Principal(PrincipalType.USER, "aud", "auditor", frozenset()),
        Principal(PrincipalType.USER, "op", "site_operator", frozenset(), site_id="site-a"),
    ]
    for n in range(users):
        mine = frozenset(f"proj-{rng.randrange(projects):04d}" for _ in range(rng.randint(1, 3)))
        people.append(Principal(PrincipalType.USER, f"user-{n:03d}", "data_scientist", mine))
    return people


def sample_requests(
    rng: random.Random, people: list[Principal], *, projects: int, count: int
) -> list[tuple[Principal, str, Resource]]:
    """Requests from ``people`` (15% admin, auditor, operator), mostly on their own projects."""
    requests = []
    for _ in range(count):
        who = rng.random()
        principal = people[0 if who < 0.05 else 1 if who < 0.10 else 2 if who < 0.15 else 3]
        if who >= 0.15:
            principal = rng.choice(people[3:])
        project = f"proj-{rng.randrange(projects):04d}"
        if principal.projects and rng.random() < 0.7:
            project = rng.choice(sorted(principal.projects))
        requests.append((principal, *_action_on(rng, project, principal)))
    return requests


def _action_on(rng: random.Random, project: str, principal: Principal) -> tuple[str, Resource]:
    roll = rng.random()
    if roll < 0.45:
        attrs = {"export_allowed": rng.random() < 0.8}
        model = Resource("Model", f"model-{rng.randrange(50)}", project=project, attrs=attrs)
        return rng.choice(ACTIONS_ON_MODELS), model
    if roll < 0.65:
        run = Resource("Run", str(rng.randrange(10_000)), project=project)
        return rng.choice(ACTIONS_ON_RUNS), run
    if roll < 0.85:
        return rng.choice(ACTIONS_ON_PROJECTS), Resource("Project", project, project=project)
    if roll < 0.90:
        return "audit:read", AUDIT_LOG
    if roll < 0.95:
        return "token:list", Resource("Token", "*", attrs={"owner": principal.id})
    return "model:list", SERVER


def measure_decisions(size: int, *, samples: int, seed: int = 7) -> dict[str, Any]:
    """Time ``PolicyEngine.authorize`` with ``size`` named policies in force."""
    with tempfile.TemporaryDirectory() as tmp:
        engine = open_database(f"sqlite:///{Path(tmp) / 'bench.db'}")
        with Session(engine) as session:
            policies = populate(session, size=size, seed=seed)
        policy_engine = PolicyEngine(engine=engine, check_interval=1.0)
        projects = max(1, size)
        rng = random.Random(seed)
        people = population(rng, projects=projects)
        for principal, action, resource in sample_requests(
            rng, people, projects=projects, count=samples
        ):
            policy_engine.authorize(principal, action, resource)  # warm-up
        timed = sample_requests(rng, people, projects=projects, count=samples)
        times, cpu = [], []
        allowed = 0
        for principal, action, resource in timed:
            start, start_cpu = time.perf_counter(), time.thread_time()
            decision = policy_engine.authorize(principal, action, resource)
            cpu.append(time.thread_time() - start_cpu)
            times.append(time.perf_counter() - start)
            allowed += decision.allowed
        engine.dispose()
    times.sort()
    cpu.sort()
    return {
        "cpu_p99_ms": cpu[int(len(cpu) * 0.99)] * 1e3,
        "policies": policies,
        "p50_ms": statistics.median(times) * 1e3,
        "p99_ms": times[int(len(times) * 0.99)] * 1e3,
        "max_ms": times[-1] * 1e3,
        "allowed_share": allowed / len(times),
    }


def _bare_app(engine: Any) -> FastAPI:
    """The project route's handler with nothing around it."""
    from fedvault.server.api.routes.projects import ProjectPublic, _public

    bare = FastAPI()

    @bare.get("/v1/projects/{project_id}", response_model=ProjectPublic)
    def read(project_id: str) -> ProjectPublic:
        with Session(engine) as session:
            return _public(session, project_id)

    return bare


async def _throughput(client: httpx.AsyncClient, path: str, *, seconds: float, clients: int) -> int:
    done = 0
    deadline = time.perf_counter() + seconds

    async def one() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            response = await client.get(path)
            if response.status_code != 200:
                raise RuntimeError(f"{path}: {response.status_code} {response.text}")
            done += 1

    await asyncio.gather(*(one() for _ in range(clients)))
    return done


async def _measure_api(*, seconds: float, clients: int, rounds: int) -> dict[str, float]:
    from fedvault.server.api.app import create_app
    from fedvault.server.core.settings import ServerSettings
    from fedvault.server.identity import (
        add_member,
        create_project,
        create_user,
        ensure_pepper,
        issue_token,
    )
    from fedvault.server.serve.datadir import init_data_dir

    with tempfile.TemporaryDirectory() as tmp:
        settings = ServerSettings(data_dir=Path(tmp) / "data", mode="test")
        ensure_pepper(init_data_dir(settings))
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            services = app.state.services
            with Session(services.engine) as session:
                create_project(session, project_id="oncology", created_by="bench")
                create_user(session, user_id="dana", role="data_scientist", created_by="bench")
                add_member(session, project_id="oncology", user_id="dana", by="bench")
                token, _ = issue_token(
                    session,
                    pepper=services.pepper,
                    principal_type="user",
                    principal_id="dana",
                    created_by="bench",
                )
            full = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://bench",
                headers={"Authorization": f"Bearer {token}"},
            )
            bare = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=_bare_app(services.engine)),
                base_url="http://bench",
            )
            path = "/v1/projects/oncology"
            await _throughput(full, path, seconds=1.0, clients=clients)  # warm-up
            await _throughput(bare, path, seconds=1.0, clients=clients)
            counts = {"full": 0, "bare": 0}
            for _ in range(rounds):
                counts["full"] += await _throughput(full, path, seconds=seconds, clients=clients)
                counts["bare"] += await _throughput(bare, path, seconds=seconds, clients=clients)
            await full.aclose()
            await bare.aclose()
    total = seconds * rounds
    return {"full_rps": counts["full"] / total, "bare_rps": counts["bare"] / total}


def measure_api(*, seconds: float = 3.0, clients: int = 32, rounds: int = 3) -> dict[str, float]:
    """Requests per second of the guarded route and of the bare one, interleaved."""
    return asyncio.run(_measure_api(seconds=seconds, clients=clients, rounds=rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5000, help="timed decisions per size")
    parser.add_argument("--seconds", type=float, default=3.0, help="per API throughput round")
    parser.add_argument("--clients", type=int, default=32, help="concurrent API clients")
    args = parser.parse_args()
    results = {}
    for size in SIZES:
        result = measure_decisions(size, samples=args.samples)
        results[size] = result
        print(
            f"{result['policies']:>5} policies: p50 {result['p50_ms']:.3f} ms  "
            f"p99 {result['p99_ms']:.3f} ms  max {result['max_ms']:.2f} ms  "
            f"(CPU time p99 {result['cpu_p99_ms']:.3f} ms)  "
            f"allowed {result['allowed_share']:.0%}"
        )
    api = measure_api(seconds=args.seconds, clients=args.clients)
    ratio = api["full_rps"] / api["bare_rps"]
    print(
        f"API GET /v1/projects/{{id}}, {args.clients} concurrent clients: authenticated + "
        f"authorized + audited {api['full_rps']:.0f} req/s, bare {api['bare_rps']:.0f} req/s, "
        f"ratio {ratio:.2f}"
    )
    print(f"RESULT api_guarded_throughput_ratio={ratio:.2f}")
    print(f"RESULT authz_p99_ms_1000={results[1000]['p99_ms']:.3f}")


if __name__ == "__main__":
    main()
