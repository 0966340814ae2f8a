"""The policy engine: edits take effect, errors deny, and its shortcuts change no decision."""

from __future__ import annotations

import random
import time
from unittest.mock import patch

import cedarpy
import pytest
import sqlalchemy
from sqlmodel import Session

from fedvault.common.errors import ConfigError
from fedvault.server.authz import SERVER, PolicyEngine, PolicyVersion, Resource, store
from tests.server.authz.factories import model, project, run, site, token, user

BOB = user("data_scientist", "bob", projects=("beta",))
ALPHA_FOR_BOB = """permit (principal == User::"bob", action == Action::"model:read",
  resource in Project::"alpha");"""


def _put(db: sqlalchemy.Engine, engine: PolicyEngine, name: str, text: str) -> None:
    with Session(db) as session:
        store.put(session, name=name, text=text, created_by="root", validator=engine.validate)


def test_an_edit_takes_effect_in_another_process_within_the_interval(
    db: sqlalchemy.Engine,
) -> None:
    """Another engine instance (another server process) sees a change after check_interval."""
    reader = PolicyEngine(engine=db, check_interval=0.2)
    writer = PolicyEngine(engine=db, check_interval=60)
    assert not reader.authorize(BOB, "model:read", model("alpha")).allowed
    _put(db, writer, "bob-reads-alpha", ALPHA_FOR_BOB)
    time.sleep(0.3)
    decision = reader.authorize(BOB, "model:read", model("alpha"))
    assert decision.allowed
    assert decision.policies == ("bob-reads-alpha",)


def test_a_watching_engine_picks_up_an_edit_without_any_decision_waiting_for_it(
    db: sqlalchemy.Engine,
) -> None:
    """With ``watch`` (as the API server runs it) a background thread notices the edit, so
    the decision after it is made with the new set and no database check of its own."""
    reader = PolicyEngine(engine=db, check_interval=0.1)
    reader.watch()
    try:
        writer = PolicyEngine(engine=db, check_interval=60)
        assert not reader.authorize(BOB, "model:read", model("alpha")).allowed
        _put(db, writer, "bob-reads-alpha", ALPHA_FOR_BOB)
        writer.invalidate()
        deadline = time.monotonic() + 5
        while reader.set_hash != writer.set_hash and time.monotonic() < deadline:
            time.sleep(0.05)
        with patch.object(reader, "_engine", None):  # no database reachable from here on
            assert reader.authorize(BOB, "model:read", model("alpha")).allowed
    finally:
        reader.close()


def test_the_engine_that_made_the_edit_can_apply_it_at_once(db: sqlalchemy.Engine) -> None:
    engine = PolicyEngine(engine=db, check_interval=3600)
    before = engine.set_hash
    _put(db, engine, "bob-reads-alpha", ALPHA_FOR_BOB)
    assert not engine.authorize(BOB, "model:read", model("alpha")).allowed  # not checked yet
    engine.invalidate()
    assert engine.authorize(BOB, "model:read", model("alpha")).allowed
    assert engine.set_hash != before


def test_a_deleted_policy_stops_applying(db: sqlalchemy.Engine, policy: PolicyEngine) -> None:
    operator = user("site_operator", "oscar", site="hospital-a")
    assert policy.authorize(operator, "site:read", Resource("Site", "hospital-a")).allowed
    with Session(db) as session:
        store.delete(session, name="site-operator", deleted_by="root")
    assert not policy.authorize(operator, "site:read", Resource("Site", "hospital-a")).allowed


def test_set_hash_covers_names_and_texts(db: sqlalchemy.Engine, policy: PolicyEngine) -> None:
    first = policy.set_hash
    assert len(first) == 64
    assert PolicyEngine(engine=db).set_hash == first
    _put(db, policy, "bob-reads-alpha", ALPHA_FOR_BOB)
    assert policy.set_hash != first


def test_forbid_wins_over_permit(db: sqlalchemy.Engine, policy: PolicyEngine) -> None:
    _put(
        db,
        policy,
        "no-admin-stops",
        'forbid (principal, action == Action::"run:stop", resource in Project::"alpha");',
    )
    admin = user("admin", "root")
    decision = policy.authorize(admin, "run:stop", run("alpha"))
    assert (decision.allowed, decision.policies) == (False, ("no-admin-stops",))
    assert policy.authorize(admin, "run:stop", run("beta")).allowed


def test_an_evaluation_error_denies_even_when_a_permit_applies(
    db: sqlalchemy.Engine, policy: PolicyEngine
) -> None:
    _put(
        db,
        policy,
        "overflow",
        "permit (principal, action, resource) when { 9223372036854775807 + 1 > 0 };",
    )
    decision = policy.authorize(user("admin", "root"), "user:list", SERVER)
    assert not decision.allowed
    assert any("overflow" in error for error in decision.errors), decision.errors


@pytest.mark.parametrize(
    ("action", "resource", "problem"),
    [
        ("model:eat", model(), "model:eat"),
        ("audit:read", SERVER, "not valid for"),
        ("model:read", Resource("Model", "m", project="alpha", attrs={"colour": "red"}), "colour"),
        (
            "model:read",
            Resource("Model", "m", project="alpha", attrs={"export_allowed": "yes"}),
            "export_allowed",
        ),
    ],
)
def test_a_malformed_request_is_denied_with_the_reason(
    policy: PolicyEngine, action: str, resource: Resource, problem: str
) -> None:
    decision = policy.authorize(user("admin", "root"), action, resource)
    assert not decision.allowed
    assert any(problem in error for error in decision.errors), decision.errors


def test_context_is_checked_against_the_schema(policy: PolicyEngine) -> None:
    admin = user("admin", "root")
    assert policy.authorize(admin, "user:list", SERVER, context={"source": "10.0.0.1"}).allowed
    assert not policy.authorize(admin, "user:list", SERVER, context={"nonsense": 1}).allowed


def test_a_corrupt_stored_set_denies_everything(db: sqlalchemy.Engine) -> None:
    """Text that bypassed validation (written to the table directly) fails closed."""
    with Session(db) as session:
        session.add(
            PolicyVersion(
                name="junk", version=1, text="permit (", sha256="0" * 64, created_by="someone"
            )
        )
        session.commit()
    engine = PolicyEngine(engine=db)
    decision = engine.authorize(user("admin", "root"), "user:list", SERVER)
    assert not decision.allowed
    assert "could not be loaded" in decision.errors[0] and "junk" in decision.errors[0]


def test_a_repeated_decision_follows_policy_edits(
    db: sqlalchemy.Engine, policy: PolicyEngine
) -> None:
    """Decisions remembered under one policy set never outlive an edit of that set."""
    for _ in range(2):
        assert not policy.authorize(BOB, "model:read", model("alpha")).allowed
    _put(db, policy, "bob-reads-alpha", ALPHA_FOR_BOB)
    for _ in range(2):
        assert policy.authorize(BOB, "model:read", model("alpha")).policies == ("bob-reads-alpha",)
    _put(db, policy, "bob-reads-alpha", ALPHA_FOR_BOB.replace('"alpha"', '"gamma"'))
    assert not policy.authorize(BOB, "model:read", model("alpha")).allowed
    assert policy.authorize(BOB, "model:read", model("gamma")).allowed
    with Session(db) as session:
        store.delete(session, name="bob-reads-alpha", deleted_by="root")
    assert not policy.authorize(BOB, "model:read", model("gamma")).allowed


def test_a_reload_keeps_applying_the_policies_that_did_not_change(
    db: sqlalchemy.Engine, policy: PolicyEngine
) -> None:
    operator = user("site_operator", "oscar", site="hospital-a")
    assert policy.authorize(operator, "site:read", Resource("Site", "hospital-a")).allowed
    _put(db, policy, "bob-reads-alpha", ALPHA_FOR_BOB)
    assert policy.authorize(operator, "site:read", Resource("Site", "hospital-a")).allowed
    assert not policy.authorize(operator, "site:read", Resource("Site", "hospital-b")).allowed
    assert not policy.authorize(
        user("admin", "root"), "model:download", model(export_allowed=False)
    ).allowed


def test_an_attribute_of_the_wrong_type_is_refused_after_a_right_one(policy: PolicyEngine) -> None:
    """``True == 1`` in Python; a remembered decision for True must not answer for 1."""
    admin = user("admin", "root")
    allowed = Resource("Model", "m", project="alpha", attrs={"export_allowed": True})
    assert policy.authorize(admin, "model:download", allowed).allowed
    wrong = Resource("Model", "m", project="alpha", attrs={"export_allowed": 1})
    decision = policy.authorize(admin, "model:download", wrong)
    assert not decision.allowed
    assert any("export_allowed" in error for error in decision.errors), decision.errors


def test_check_interval_must_not_be_negative(db: sqlalchemy.Engine) -> None:
    with pytest.raises(ConfigError, match="check_interval"):
        PolicyEngine(engine=db, check_interval=-1)


def _many_policies(rng: random.Random) -> dict[str, str]:
    texts = dict(store.default_policy_texts())
    for n in range(60):
        p = f"p{n % 7}"
        texts[f"gen-{n}"] = rng.choice(
            [
                f'permit (principal in Project::"{p}", action in Action::"read", '
                f'resource in Project::"{p}");',
                f'forbid (principal == User::"u{n % 5}", action, resource in Project::"{p}");',
                f'permit (principal is User, action == Action::"run:stop", resource is Run) '
                f'when {{ resource.project == Project::"{p}" }};',
                f'permit (principal is User in Project::"{p}", action, '
                f'resource == Project::"{p}");',
                f'forbid (principal, action in Action::"token", resource) '
                f'when {{ principal in Project::"{p}" }};',
                f'permit (principal == Site::"s{n % 3}", action, '
                f'resource is Token in Site::"s{n % 3}");',
                'permit (principal, action == Action::"metrics:read", '
                'resource == Server::"fedvault");',
            ]
        )
    return texts


def test_indexed_decisions_equal_evaluating_the_whole_set(db: sqlalchemy.Engine) -> None:
    """Evaluating only the statements that can match gives Cedar's answer for the full set."""
    rng = random.Random(4)
    texts = _many_policies(rng)
    with Session(db) as session:
        for name, text in texts.items():
            store.put(session, name=name, text=text, created_by="t", validator=lambda *_: None)
    engine = PolicyEngine(engine=db)
    whole = cedarpy.PolicySet.from_str("\n".join(texts[name] for name in sorted(texts)))
    owner = [
        name for name in sorted(texts) for _ in range(len(cedarpy.PolicySet.from_str(texts[name])))
    ]
    schema = cedarpy.Schema.from_str(store.load_schema_text())
    roles = ["admin", "data_scientist", "auditor", "site_operator"]
    actions = "model:read model:download run:stop run:read run:create project:read token:list"
    actions += " metrics:read audit:read site:read"
    compared = 0
    for _ in range(600):
        projects = tuple(f"p{rng.randrange(8)}" for _ in range(rng.randrange(3)))
        caller = (
            site(f"s{rng.randrange(4)}")
            if rng.random() < 0.15
            else user(
                rng.choice(roles),
                f"u{rng.randrange(6)}",
                projects=projects,
                site="h1" if rng.random() < 0.2 else None,
            )
        )
        action = rng.choice(actions.split())
        p = f"p{rng.randrange(8)}"
        resource = {
            "model": model(p, export_allowed=rng.random() < 0.7),
            "run": run(p),
            "project": project(p),
            "token": token(caller.id, owner_type=caller.type.value),
            "metrics": SERVER,
            "audit": Resource("AuditLog", "log"),
            "site": Resource("Site", rng.choice(["h1", "h2"])),
        }["project" if action == "run:create" else action.split(":")[0]]
        decision = engine.authorize(caller, action, resource)
        expected = cedarpy.is_authorized(
            {
                "principal": {"type": "User" if caller.type == "user" else "Site", "id": caller.id},
                "action": {"type": "Action", "id": action},
                "resource": {"type": resource.type, "id": resource.id},
                "context": {},
            },
            whole,
            _entities(caller, resource),
            schema=schema,
        )
        assert decision.allowed == expected.allowed, (caller, action, resource)
        reasons = {owner[int(pid.removeprefix("policy"))] for pid in expected.diagnostics.reasons}
        assert decision.policies == tuple(sorted(reasons)), (caller, action, resource)
        compared += 1
    assert compared == 600


def _entities(caller, resource: Resource) -> list[dict]:
    """Entities written out by hand, independently of the engine's own code."""

    def uid(t: str, i: str) -> dict:
        return {"type": t, "id": i}

    if caller.type == "user":
        parents = [uid("Project", p) for p in caller.projects]
        if caller.site_id:
            parents.append(uid("Site", caller.site_id))
        me = {
            "uid": uid("User", caller.id),
            "parents": parents,
            "attrs": {"role": caller.role, "site": caller.site_id or ""},
        }
    else:
        me = {"uid": uid("Site", caller.id), "parents": [], "attrs": {}}
    attrs: dict = {}
    parents = []
    if resource.type in ("Run", "Model"):
        attrs["project"] = {"__entity": uid("Project", resource.project)}
        parents.append(uid("Project", resource.project))
    if resource.type == "Model":
        attrs["export_allowed"] = resource.attrs["export_allowed"]
    if resource.type == "Token":
        attrs["owner"] = resource.attrs["owner"]
        owner_type = "Site" if resource.attrs["owner_type"] == "site" else "User"
        parents.append(uid(owner_type, resource.attrs["owner"]))
    it = {"uid": uid(resource.type, resource.id), "attrs": attrs, "parents": parents}
    return [me] if it["uid"] == me["uid"] else [me, it]
