"""Stored policies: versions kept, bad text refused with a message, deletes recorded."""

from __future__ import annotations

import hashlib

import pytest
import sqlalchemy
from sqlmodel import Session

from fedvault.common.errors import ConfigError, NotFound
from fedvault.server.authz import PolicyEngine, store

READERS = """permit (principal is User in Project::"alpha", action == Action::"model:read",
  resource in Project::"alpha");"""


def test_seed_stores_the_defaults_once(db_url: str) -> None:
    from fedvault.server.core.db import open_database

    engine = open_database(db_url)
    with Session(engine) as session:
        assert store.seed_defaults(session, created_by="init") == len(store.default_policy_texts())
        assert store.seed_defaults(session) == 0
        rows = store.in_force(session)
        assert [row.name for row in rows] == sorted(store.default_policy_texts())
        assert {row.version for row in rows} == {1}
        assert {row.created_by for row in rows} == {"init"}
        for row in rows:
            assert row.sha256 == hashlib.sha256(row.text.encode()).hexdigest()
    engine.dispose()


def test_put_keeps_every_version(db: sqlalchemy.Engine, policy: PolicyEngine) -> None:
    with Session(db) as session:
        first = store.put(
            session,
            name="alpha-readers",
            text=READERS,
            created_by="root",
            validator=policy.validate,
        )
        changed = READERS.replace("model:read", "run:read")
        second = store.put(
            session,
            name="alpha-readers",
            text=changed,
            created_by="ada",
            validator=policy.validate,
        )
        assert (first.version, second.version) == (1, 2)
        assert store.get(session, "alpha-readers").text == changed
        assert store.get(session, "alpha-readers", version=1).text == READERS
        assert [(r.version, r.created_by) for r in store.history(session, "alpha-readers")] == [
            (1, "root"),
            (2, "ada"),
        ]


def test_putting_the_same_text_again_adds_no_version(
    db: sqlalchemy.Engine, policy: PolicyEngine
) -> None:
    with Session(db) as session:
        text = store.get(session, "admin").text
        again = store.put(
            session, name="admin", text=text, created_by="root", validator=policy.validate
        )
        assert again.version == 1
        assert len(store.history(session, "admin")) == 1


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("Bad_Name", READERS, "Invalid policy name 'Bad_Name'"),
        ("", READERS, "Invalid policy name ''"),
        ("x" * 65, READERS, "Invalid policy name"),
        ("broken", "permit (principal, action, resource", "Policy 'broken' does not parse"),
        ("empty", "// nothing here\n", "holds no permit or forbid"),
        (
            "typo",
            'permit (principal, action == Action::"model:raed", resource);',
            "does not fit the schema",
        ),
        (
            "wrong-attr",
            'permit (principal is User, action, resource) when { principal.rank == "admin" };',
            "statement 1: ",
        ),
        (
            "template",
            "permit (principal == ?principal, action, resource);",
            "is a template",
        ),
    ],
)
def test_bad_policy_is_refused_and_the_old_one_stays(
    db: sqlalchemy.Engine, policy: PolicyEngine, name: str, text: str, message: str
) -> None:
    with Session(db) as session:
        before = len(store.history(session, name[:64] or "x"))
        with pytest.raises(ConfigError, match=message):
            store.put(session, name=name, text=text, created_by="root", validator=policy.validate)
        assert len(store.history(session, name[:64] or "x")) == before
        assert len(store.in_force(session)) == len(store.default_policy_texts())


def test_schema_errors_say_which_statement(policy: PolicyEngine) -> None:
    text = READERS + '\npermit (principal, action == Action::"nope", resource);'
    with pytest.raises(ConfigError, match=r"statement 2: .*nope"):
        policy.validate("two", text)


def test_the_whole_set_is_checked_even_with_a_lax_validator(db: sqlalchemy.Engine) -> None:
    """``put`` validates the resulting set itself; a validator cannot let a bad policy in."""
    with Session(db) as session:
        with pytest.raises(ConfigError, match="does not fit the schema"):
            store.put(
                session,
                name="sneaky",
                text='permit (principal, action == Action::"everything", resource);',
                created_by="root",
                validator=lambda _name, _text: None,
            )
        with pytest.raises(NotFound):
            store.get(session, "sneaky")


def test_delete_withdraws_a_policy_and_keeps_its_history(db: sqlalchemy.Engine) -> None:
    with Session(db) as session:
        gone = store.delete(session, name="site-operator", deleted_by="root")
        assert (gone.version, gone.deleted, gone.created_by) == (2, True, "root")
        assert "site-operator" not in {row.name for row in store.in_force(session)}
        with pytest.raises(NotFound, match="No policy named 'site-operator' is in force"):
            store.get(session, "site-operator")
        assert store.get(session, "site-operator", version=1).deleted is False
        with pytest.raises(NotFound):
            store.delete(session, name="site-operator", deleted_by="root")


def test_a_deleted_policy_can_come_back(db: sqlalchemy.Engine, policy: PolicyEngine) -> None:
    with Session(db) as session:
        old = store.get(session, "export").text
        store.delete(session, name="export", deleted_by="root")
        back = store.put(
            session, name="export", text=old, created_by="root", validator=policy.validate
        )
        assert (back.version, back.deleted) == (3, False)


def test_unknown_names_and_versions_are_not_found(db: sqlalchemy.Engine) -> None:
    with Session(db) as session:
        with pytest.raises(NotFound, match="No policy named 'nope'"):
            store.get(session, "nope")
        with pytest.raises(NotFound, match="has no version 7"):
            store.get(session, "admin", version=7)
        assert store.history(session, "nope") == []
