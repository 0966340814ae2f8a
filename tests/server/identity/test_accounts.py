"""Users, projects and membership: good input stored, bad input refused with a reason."""

from __future__ import annotations

import pytest
from sqlmodel import Session

from fedvault.common.errors import AlreadyExists, ConfigError, NotFound
from fedvault.server.identity import service
from fedvault.server.identity.tables import Role


def test_create_and_read_users(session: Session) -> None:
    user = service.create_user(
        session, user_id="alice", role="data_scientist", created_by="admin", display_name="Alice"
    )
    assert (user.id, user.role, user.display_name, user.disabled) == (
        "alice",
        Role.DATA_SCIENTIST,
        "Alice",
        False,
    )
    service.create_user(session, user_id="bob.b_2-x", role="auditor", created_by="admin")
    assert service.get_user(session, "alice").display_name == "Alice"
    assert [u.id for u in service.list_users(session)] == ["alice", "bob.b_2-x"]
    assert [u.id for u in service.list_users(session, role="auditor")] == ["bob.b_2-x"]


@pytest.mark.parametrize(
    "bad_id", ["", "Alice", "1alice", "-a", "a b", "a/b", "a" * 65, "ålice", "a\n", None, 7]
)
def test_bad_user_ids_are_refused(session: Session, bad_id: object) -> None:
    with pytest.raises(ConfigError, match="not a valid user id"):
        service.create_user(session, user_id=bad_id, role="admin", created_by="x")
    assert service.list_users(session) == []


def test_longest_valid_id_is_accepted(session: Session) -> None:
    service.create_user(session, user_id="a" * 64, role="admin", created_by="x")


@pytest.mark.parametrize("bad_role", ["root", "Admin", "", None])
def test_unknown_roles_are_refused_naming_the_roles(session: Session, bad_role: object) -> None:
    with pytest.raises(ConfigError, match="data_scientist"):
        service.create_user(session, user_id="u", role=bad_role, created_by="x")


def test_duplicate_user_is_refused(session: Session) -> None:
    service.create_user(session, user_id="alice", role="admin", created_by="x")
    with pytest.raises(AlreadyExists, match="alice"):
        service.create_user(session, user_id="alice", role="auditor", created_by="x")
    assert service.get_user(session, "alice").role == "admin"


def test_site_operator_needs_an_existing_registered_site(session: Session, node_key: str) -> None:
    with pytest.raises(ConfigError, match="must name the site"):
        service.create_user(session, user_id="op", role="site_operator", created_by="x")
    with pytest.raises(ConfigError, match="No site 'nowhere'"):
        service.create_user(
            session, user_id="op", role="site_operator", created_by="x", site_id="nowhere"
        )
    service.add_site(session, site_id="site-a", public_key=node_key, created_by="x")
    op = service.create_user(
        session, user_id="op", role="site_operator", created_by="x", site_id="site-a"
    )
    assert op.site_id == "site-a"
    service.revoke_site(session, site_id="site-a", by="x")
    with pytest.raises(ConfigError, match="revoked"):
        service.create_user(
            session, user_id="op2", role="site_operator", created_by="x", site_id="site-a"
        )


def test_non_operators_may_not_have_a_site(session: Session, node_key: str) -> None:
    service.add_site(session, site_id="site-a", public_key=node_key, created_by="x")
    with pytest.raises(ConfigError, match="Only site operators"):
        service.create_user(
            session, user_id="ds", role="data_scientist", created_by="x", site_id="site-a"
        )


def test_too_long_display_name_is_refused(session: Session) -> None:
    with pytest.raises(ConfigError, match="at most 200"):
        service.create_user(
            session, user_id="u", role="admin", created_by="x", display_name="x" * 201
        )


def test_unknown_user_is_not_found(session: Session) -> None:
    with pytest.raises(NotFound, match="ghost"):
        service.get_user(session, "ghost")
    with pytest.raises(NotFound):
        service.set_disabled(session, user_id="ghost", disabled=True, by="x")


def test_disable_and_enable(session: Session) -> None:
    service.create_user(session, user_id="root", role="admin", created_by="x")
    service.create_user(session, user_id="alice", role="data_scientist", created_by="x")
    assert service.set_disabled(session, user_id="alice", disabled=True, by="root").disabled
    assert not service.set_disabled(session, user_id="alice", disabled=False, by="root").disabled


def test_the_last_enabled_admin_cannot_be_disabled(session: Session) -> None:
    service.create_user(session, user_id="root", role="admin", created_by="x")
    with pytest.raises(ConfigError, match="last enabled admin"):
        service.set_disabled(session, user_id="root", disabled=True, by="root")
    service.create_user(session, user_id="root2", role="admin", created_by="x")
    service.set_disabled(session, user_id="root", disabled=True, by="root2")
    with pytest.raises(ConfigError, match="last enabled admin"):
        service.set_disabled(session, user_id="root2", disabled=True, by="root2")


def test_projects_and_membership(session: Session) -> None:
    service.create_project(session, project_id="cancer", created_by="x", description="Oncology")
    service.create_project(session, project_id="cardio", created_by="x")
    service.create_user(session, user_id="alice", role="data_scientist", created_by="x")
    service.create_user(session, user_id="bob", role="data_scientist", created_by="x")
    service.add_member(session, project_id="cancer", user_id="alice", by="x")
    service.add_member(session, project_id="cancer", user_id="alice", by="x")  # no change
    service.add_member(session, project_id="cancer", user_id="bob", by="x")
    service.add_member(session, project_id="cardio", user_id="bob", by="x")
    assert service.get_project(session, "cancer").description == "Oncology"
    assert service.members(session, "cancer") == ["alice", "bob"]
    assert [p.id for p in service.list_projects(session)] == ["cancer", "cardio"]
    assert [p.id for p in service.list_projects(session, member="alice")] == ["cancer"]
    assert [p.id for p in service.list_projects(session, member="bob")] == ["cancer", "cardio"]
    assert service.list_projects(session, member="nobody") == []
    service.remove_member(session, project_id="cancer", user_id="alice", by="x")
    assert service.members(session, "cancer") == ["bob"]
    with pytest.raises(NotFound, match="not a member"):
        service.remove_member(session, project_id="cancer", user_id="alice", by="x")


def test_project_bad_input(session: Session) -> None:
    with pytest.raises(ConfigError, match="not a valid project id"):
        service.create_project(session, project_id="Big Project", created_by="x")
    with pytest.raises(ConfigError, match="at most 1000"):
        service.create_project(session, project_id="p", created_by="x", description="d" * 1001)
    service.create_project(session, project_id="p", created_by="x")
    with pytest.raises(AlreadyExists, match="'p'"):
        service.create_project(session, project_id="p", created_by="x")


def test_membership_of_unknown_project_or_user_is_not_found(session: Session) -> None:
    service.create_user(session, user_id="alice", role="data_scientist", created_by="x")
    service.create_project(session, project_id="p", created_by="x")
    with pytest.raises(NotFound, match="project 'nope'"):
        service.add_member(session, project_id="nope", user_id="alice", by="x")
    with pytest.raises(NotFound, match="user 'ghost'"):
        service.add_member(session, project_id="p", user_id="ghost", by="x")
    with pytest.raises(NotFound, match="project 'nope'"):
        service.members(session, "nope")
    with pytest.raises(NotFound):
        service.remove_member(session, project_id="nope", user_id="alice", by="x")
    with pytest.raises(NotFound):
        service.get_project(session, "nope")
