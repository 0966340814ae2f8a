"""The shipped schema and default policies: they validate, and each role gets what it should."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cedarpy
import pytest
from sqlmodel import Session

from fedvault.server.authz import (
    AUDIT_LOG,
    RESOURCE_TYPES,
    SERVER,
    Decision,
    PolicyEngine,
    Resource,
    store,
)
from fedvault.server.authz._index import action_groups
from fedvault.server.core.db import open_database
from tests.server.authz.factories import model, project, run, site, token, user

ADMIN = user("admin", "root")
ALICE = user("data_scientist", "alice", projects=("alpha",))
AUDITOR = user("auditor", "audrey")
OPERATOR = user("site_operator", "oscar", site="hospital-a")

DESIGN_ACTIONS = {
    "user:create", "user:list", "user:read", "user:update",
    "token:create", "token:list", "token:revoke",
    "project:create", "project:list", "project:read", "project:update",
    "site:register", "site:list", "site:read", "site:revoke",
    "run:create", "run:list", "run:read", "run:stop",
    "model:list", "model:read", "model:download",
    "policy:read", "policy:write", "policy:test",
    "audit:read", "audit:export", "audit:verify",
    "metrics:read",
}  # fmt: skip


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PolicyEngine]:
    """A policy engine over a SQLite database holding only the defaults."""
    db = open_database(f"sqlite:///{tmp_path_factory.mktemp('authz') / 'fedvault.db'}")
    with Session(db) as session:
        store.seed_defaults(session)
    yield PolicyEngine(engine=db)
    db.dispose()


def test_every_default_policy_fits_the_schema() -> None:
    """What CI checks: each default file, and the set together, validate against the schema."""
    schema = cedarpy.Schema.from_str(store.load_schema_text())
    defaults = store.default_policy_texts()
    assert {"admin", "data-scientist", "auditor", "site-operator", "export"} <= set(defaults)
    for name, text in defaults.items():
        store.check_name(name)
        result = cedarpy.validate_policies(text, schema)
        assert result.validation_passed, (name, [str(e) for e in result.errors])
    store.validate_set(defaults)


def test_policy_files_ship_with_the_package() -> None:
    """The files the server reads are the ones in the repository's policies/ folder."""
    folder = Path(__file__).parents[3] / "policies"
    assert store.load_schema_text() == (folder / "schema.cedarschema").read_text()
    assert set(store.default_policy_texts()) == {p.stem for p in folder.glob("*.cedar")}


def test_schema_declares_every_action_the_routes_use() -> None:
    assert set(action_groups(store.load_schema_text())) >= DESIGN_ACTIONS


def test_action_groups_read_from_the_schema_agree_with_cedar() -> None:
    """The engine's own reading of action groups matches Cedar's for every action and group."""
    schema_text = store.load_schema_text()
    schema = cedarpy.Schema.from_str(schema_text)
    groups = action_groups(schema_text)
    all_groups = set().union(*groups.values())
    for action in DESIGN_ACTIONS:
        for group in all_groups:
            policy = f'permit (principal, action in Action::"{group}", resource);'
            for resource_type in sorted(RESOURCE_TYPES):
                request = {
                    "principal": 'User::"u"',
                    "action": f'Action::"{action}"',
                    "resource": f'{resource_type}::"x"',
                    "context": {},
                }
                entities = [
                    {
                        "uid": {"type": "User", "id": "u"},
                        "attrs": {"role": "", "site": ""},
                        "parents": [],
                    },
                    {
                        "uid": {"type": resource_type, "id": "x"},
                        "attrs": _attrs(resource_type),
                        "parents": [],
                    },
                ]
                result = cedarpy.is_authorized(request, policy, entities, schema=schema)
                if result.diagnostics.errors:
                    continue  # this resource type does not go with this action
                assert result.allowed == (group in groups[action]), (action, group)
                break
            else:
                pytest.fail(f"no resource type is valid for {action}")


def _attrs(resource_type: str) -> dict:
    return {
        "User": {"role": "", "site": ""},
        "Token": {"owner": "u"},
        "Run": {"project": {"__entity": {"type": "Project", "id": "p"}}},
        "Model": {"project": {"__entity": {"type": "Project", "id": "p"}}, "export_allowed": True},
    }.get(resource_type, {})


ALLOWED = [
    (ADMIN, "user:create", SERVER),
    (ADMIN, "project:update", project("beta")),
    (ADMIN, "site:revoke", Resource("Site", "hospital-a")),
    (ADMIN, "model:download", model("beta")),
    (ADMIN, "policy:write", Resource("Policy", "export")),
    (ADMIN, "audit:verify", AUDIT_LOG),
    (ADMIN, "token:revoke", token("alice")),
    (ALICE, "project:list", SERVER),
    (ALICE, "project:read", project("alpha")),
    (ALICE, "run:create", project("alpha")),
    (ALICE, "run:list", project("alpha")),
    (ALICE, "run:read", run("alpha")),
    (ALICE, "run:stop", run("alpha")),
    (ALICE, "model:list", SERVER),
    (ALICE, "model:read", model("alpha")),
    (ALICE, "model:download", model("alpha")),
    (ALICE, "token:create", token("alice")),
    (ALICE, "user:read", Resource("User", "alice")),
    (AUDITOR, "audit:read", AUDIT_LOG),
    (AUDITOR, "audit:export", AUDIT_LOG),
    (AUDITOR, "audit:verify", AUDIT_LOG),
    (AUDITOR, "metrics:read", SERVER),
    (AUDITOR, "token:list", token("audrey")),
    (OPERATOR, "site:read", Resource("Site", "hospital-a")),
    (OPERATOR, "token:revoke", token("oscar")),
    (site("hospital-a"), "token:list", token("hospital-a", owner_type="site")),
]

DENIED = [
    (ALICE, "run:read", run("beta")),
    (ALICE, "run:create", project("beta")),
    (ALICE, "project:read", project("beta")),
    (ALICE, "model:read", model("beta")),
    (ALICE, "model:download", model("beta")),
    (ALICE, "project:update", project("alpha")),
    (ALICE, "user:create", SERVER),
    (ALICE, "user:read", Resource("User", "bob")),
    (ALICE, "user:list", SERVER),
    (ALICE, "audit:read", AUDIT_LOG),
    (ALICE, "policy:write", Resource("Policy", "export")),
    (ALICE, "site:register", SERVER),
    (ALICE, "token:revoke", token("bob")),
    (ALICE, "token:list", token("alice", owner_type="site")),
    (ALICE, "metrics:read", SERVER),
    (AUDITOR, "model:download", model("alpha")),
    (AUDITOR, "model:read", model("alpha")),
    (AUDITOR, "model:list", SERVER),
    (AUDITOR, "run:read", run("alpha")),
    (AUDITOR, "user:create", SERVER),
    (AUDITOR, "policy:write", SERVER),
    (AUDITOR, "token:revoke", token("alice")),
    (OPERATOR, "site:read", Resource("Site", "hospital-b")),
    (OPERATOR, "site:revoke", Resource("Site", "hospital-a")),
    (OPERATOR, "model:read", model("alpha")),
    (OPERATOR, "audit:read", AUDIT_LOG),
    (OPERATOR, "token:revoke", token("alice")),
    (site("hospital-a"), "model:download", model("alpha")),
    (site("hospital-a"), "site:read", Resource("Site", "hospital-a")),
]


def _label(case: tuple) -> str:
    principal, action, resource = case
    return f"{principal.role or 'site'}-{action}-{resource.type}-{resource.project or resource.id}"


@pytest.mark.parametrize("case", ALLOWED, ids=_label)
def test_role_is_allowed(engine: PolicyEngine, case: tuple) -> None:
    decision = engine.authorize(*case)
    assert decision.allowed, decision
    assert decision.policies and not decision.errors


@pytest.mark.parametrize("case", DENIED, ids=_label)
def test_role_is_denied(engine: PolicyEngine, case: tuple) -> None:
    decision = engine.authorize(*case)
    assert decision == Decision(False, decision.policies, ())
    assert not decision.allowed


def test_no_one_downloads_a_model_a_site_does_not_let_leave(engine: PolicyEngine) -> None:
    """The export forbid wins over every permit, the admin's included, and is named."""
    for caller in (ADMIN, ALICE):
        decision = engine.authorize(caller, "model:download", model(export_allowed=False))
        assert not decision.allowed
        assert decision.policies == ("export",)
        assert decision.policy == "export"
        assert engine.authorize(caller, "model:read", model(export_allowed=False)).allowed


def test_a_model_without_the_export_flag_stays(engine: PolicyEngine) -> None:
    """Leaving ``export_allowed`` out is the safe answer: no download."""
    bare = Resource("Model", "m", project="alpha")
    assert not engine.authorize(ADMIN, "model:download", bare).allowed
    assert engine.authorize(ADMIN, "model:read", bare).allowed


def test_the_auditor_forbid_is_named(engine: PolicyEngine) -> None:
    decision = engine.authorize(AUDITOR, "model:read", model())
    assert decision.policies == ("auditor",)


def test_default_deny_names_no_policy(engine: PolicyEngine) -> None:
    decision = engine.authorize(OPERATOR, "run:read", run())
    assert decision == Decision(False, (), ())
    assert decision.policy is None


def test_allowed_decision_names_every_determining_policy(engine: PolicyEngine) -> None:
    decision = engine.authorize(ADMIN, "token:revoke", token("root"))
    assert decision.policies == ("admin", "self-service")
    assert decision.policy == "admin,self-service"
