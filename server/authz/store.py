"""Named, versioned Cedar policies in the database: the newest version of each name is in force."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from functools import lru_cache
from importlib import resources

import cedarpy
import sqlalchemy.exc
from sqlalchemy import func
from sqlmodel import Session, col, select

from fedvault.common.errors import AlreadyExists, ConfigError, NotFound
from fedvault.server.authz.tables import PolicyVersion

__all__ = [
    "POLICY_NAME",
    "check_name",
    "default_policy_texts",
    "delete",
    "get",
    "history",
    "in_force",
    "load_schema_text",
    "put",
    "seed_defaults",
    "validate_set",
]

POLICY_NAME = re.compile(r"[a-z][a-z0-9-]{0,63}")
_PACKAGE = "fedvault.policies"
_SCHEMA_FILE = "schema.cedarschema"


def check_name(name: str) -> None:
    """Refuse a policy name that is not ``[a-z][a-z0-9-]{0,63}``.

    Raises:
        ConfigError: The name does not fit the rule.
    """
    if not isinstance(name, str) or not POLICY_NAME.fullmatch(name):
        raise ConfigError(
            f"Invalid policy name {name!r}: use 1 to 64 characters, lowercase letters, digits "
            "and '-', starting with a letter (e.g. 'project-alpha-readers')."
        )


def load_schema_text() -> str:
    """The Cedar schema every policy is validated against (``policies/schema.cedarschema``)."""
    return resources.files(_PACKAGE).joinpath(_SCHEMA_FILE).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def _schema() -> cedarpy.Schema:
    return cedarpy.Schema.from_str(load_schema_text())


def default_policy_texts() -> dict[str, str]:
    """The default policies shipped in ``policies/*.cedar``, by name (the file stem)."""
    texts = {}
    for entry in resources.files(_PACKAGE).iterdir():
        if entry.name.endswith(".cedar") and entry.is_file():
            texts[entry.name.removesuffix(".cedar")] = entry.read_text(encoding="utf-8")
    return dict(sorted(texts.items()))


def validate_set(texts: dict[str, str]) -> None:
    """Check that a whole policy set parses and conforms to the schema.

    Args:
        texts: Policy text by name.

    Raises:
        ConfigError: Naming the problem, and the policy where Cedar says which one.
    """
    joined = "\n".join(texts[name] for name in sorted(texts))
    try:
        result = cedarpy.validate_policies(joined, _schema())
    except ValueError as e:
        raise ConfigError(f"The resulting policy set does not parse: {e}") from e
    if not result.validation_passed:
        problems = "; ".join(str(error.error) for error in result.errors)
        raise ConfigError(f"The resulting policy set does not fit the schema: {problems}")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def history(session: Session, name: str) -> list[PolicyVersion]:
    """Every version of one policy, oldest first (empty if the name was never used)."""
    statement = (
        select(PolicyVersion).where(PolicyVersion.name == name).order_by(col(PolicyVersion.version))
    )
    return list(session.exec(statement))


def _latest(session: Session, name: str) -> PolicyVersion | None:
    statement = (
        select(PolicyVersion)
        .where(PolicyVersion.name == name)
        .order_by(col(PolicyVersion.version).desc())
        .limit(1)
    )
    return session.exec(statement).first()


def in_force(session: Session) -> list[PolicyVersion]:
    """The newest version of every policy name that is not deleted, sorted by name."""
    newest = (
        select(PolicyVersion.name, func.max(PolicyVersion.version).label("version"))
        .group_by(col(PolicyVersion.name))
        .subquery()
    )
    statement = (
        select(PolicyVersion)
        .join(
            newest,
            (col(PolicyVersion.name) == newest.c.name)
            & (col(PolicyVersion.version) == newest.c.version),
        )
        .where(col(PolicyVersion.deleted).is_(False))
        .order_by(col(PolicyVersion.name))
    )
    return list(session.exec(statement))


def get(session: Session, name: str, *, version: int | None = None) -> PolicyVersion:
    """One policy: the version in force, or a given version (deleted ones included).

    Raises:
        NotFound: No such policy, version, or the policy is deleted (when no version is given).
    """
    if version is None:
        row = _latest(session, name)
        if row is None or row.deleted:
            raise NotFound(
                f"No policy named {name!r} is in force; list them with GET /v1/policies."
            )
        return row
    statement = select(PolicyVersion).where(
        PolicyVersion.name == name, PolicyVersion.version == version
    )
    row = session.exec(statement).first()
    if row is None:
        raise NotFound(f"Policy {name!r} has no version {version}; see its version history.")
    return row


def _add(session: Session, *, name: str, text: str, deleted: bool, by: str) -> PolicyVersion:
    latest = _latest(session, name)
    row = PolicyVersion(
        name=name,
        version=1 if latest is None else latest.version + 1,
        text=text,
        sha256=_sha256(text),
        deleted=deleted,
        created_by=by,
    )
    session.add(row)
    try:
        session.commit()
    except sqlalchemy.exc.IntegrityError as e:
        session.rollback()
        raise AlreadyExists(
            f"Policy {name!r} was changed by another request at the same time; "
            "read it again and retry."
        ) from e
    session.refresh(row)
    return row


def put(
    session: Session,
    *,
    name: str,
    text: str,
    created_by: str,
    validator: Callable[[str, str], None],
) -> PolicyVersion:
    """Store a new version of a policy, after checking it and the set it makes.

    Args:
        session: Database session.
        name: Policy name (``[a-z][a-z0-9-]{0,63}``).
        text: Cedar policy text (one or more ``permit``/``forbid`` statements).
        created_by: Who makes the change (for the record).
        validator: Checks one named text, e.g. ``PolicyEngine.validate``.

    Returns:
        The new version, or the version in force when ``text`` is unchanged.

    Raises:
        ConfigError: Bad name, or the text or resulting set does not parse or fit the schema.
    """
    check_name(name)
    validator(name, text)
    latest = _latest(session, name)
    if latest is not None and not latest.deleted and latest.text == text:
        return latest
    texts = {row.name: row.text for row in in_force(session)}
    texts[name] = text
    validate_set(texts)
    return _add(session, name=name, text=text, deleted=False, by=created_by)


def delete(session: Session, *, name: str, deleted_by: str) -> PolicyVersion:
    """Withdraw a policy: a new version marked deleted; earlier versions stay.

    Raises:
        NotFound: No policy of that name is in force.
    """
    current = get(session, name)
    return _add(session, name=name, text=current.text, deleted=True, by=deleted_by)


def seed_defaults(session: Session, *, created_by: str = "fedvault") -> int:
    """Store the default policies as version 1 when the policy table is empty.

    Returns:
        How many policies were stored (0 when the table held any version already).
    """
    if session.exec(select(PolicyVersion.id).limit(1)).first() is not None:
        return 0
    defaults = default_policy_texts()
    validate_set(defaults)
    for name, text in defaults.items():
        check_name(name)
        session.add(
            PolicyVersion(
                name=name, version=1, text=text, sha256=_sha256(text), created_by=created_by
            )
        )
    session.commit()
    return len(defaults)
