"""The policy decision point: Cedar decides whether a principal may do an action on a resource."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cedarpy
import sqlalchemy
from sqlalchemy import func
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, select

from fedvault.common.errors import ConfigError
from fedvault.server.authz import store
from fedvault.server.authz._index import CompiledSet, Uid, action_groups
from fedvault.server.authz.tables import PolicyVersion

if TYPE_CHECKING:
    from fedvault.server.identity.principal import Principal

__all__ = ["AUDIT_LOG", "RESOURCE_TYPES", "SERVER", "Decision", "PolicyEngine", "Resource"]

logger = logging.getLogger(__name__)

RESOURCE_TYPES = frozenset(
    {"User", "Site", "Project", "Token", "Run", "Model", "Policy", "AuditLog", "Server"}
)
_PROJECT_ATTR_TYPES = frozenset({"Run", "Model"})  # types whose schema has `project: Project`
_PRINCIPAL_CACHE = 4096
_DECISION_CACHE = 16384  # decisions remembered per policy set, all dropped when full
_KEY_TYPES = frozenset({str, bool, int})


@dataclass(frozen=True)
class Resource:
    """What an action is done to, as the policies see it.

    Attributes:
        type: Cedar entity type, one of ``RESOURCE_TYPES``.
        id: The object's id (``"*"`` or the new name for a collection-level or create action).
        project: The owning project (runs and models; a Project names itself), if any.
        attrs: Cedar attributes: Model ``export_allowed`` (default False); Token ``owner``
            (the owning principal's id) and ``owner_type`` (``"user"``, the default, or
            ``"site"``).
    """

    type: str
    id: str
    project: str | None = None
    attrs: Mapping[str, Any] = field(default_factory=dict)


SERVER = Resource("Server", "fedvault")
AUDIT_LOG = Resource("AuditLog", "log")


@dataclass(frozen=True)
class Decision:
    """The outcome of one authorization request.

    Attributes:
        allowed: True only when a permit applies, no forbid applies and nothing failed.
        policies: Names of the determining policies (empty for the default deny).
        errors: Evaluation or request errors; any error makes the decision a deny.
    """

    allowed: bool
    policies: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()

    @property
    def policy(self) -> str | None:
        """Comma-joined determining policy names for the audit event, or None."""
        return ",".join(self.policies) if self.policies else None


@dataclass(frozen=True)
class _Snapshot:
    mark: tuple[int, int | None]
    compiled: CompiledSet | None  # None: the stored set could not be loaded (deny everything)
    set_hash: str
    problem: str | None = None
    # Decisions made under this set, by (principal, action, resource): Cedar's answer is a
    # function of the policies, entities and request alone, and a reload starts a new dict.
    decisions: dict[tuple[Any, ...], Decision] = field(default_factory=dict)


def _uid(uid: Uid) -> dict[str, str]:
    return {"type": uid[0], "id": uid[1]}


class PolicyEngine:
    """Parsed policy set + schema, cached; reloads when the set in the database changes.

    Changes made by any process are seen within ``check_interval`` seconds (one cheap query
    per interval); ``invalidate`` makes the next decision reload at once. By default the
    decision that finds the interval over does the check; after ``watch`` a background
    thread does it, so decisions made on an event loop never wait on the database.
    """

    def __init__(self, *, engine: sqlalchemy.Engine, check_interval: float = 1.0):
        """Load the policies in force from the database behind ``engine``."""
        if check_interval < 0:
            raise ConfigError(f"check_interval must be >= 0 seconds, got {check_interval}.")
        self._engine = engine
        self._check_interval = check_interval
        schema_text = store.load_schema_text()
        self._schema = cedarpy.Schema.from_str(schema_text)
        self._groups = action_groups(schema_text)
        self._lock = threading.Lock()
        self._dirty = False
        self._next_check = time.monotonic() + check_interval
        self._principals: dict[Principal, tuple[Uid, frozenset[Uid], str]] = {}
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()
        self._snapshot = self._load()

    def watch(self) -> None:
        """Check for changes in a background thread from now on (until ``close``)."""
        if self._watcher is not None or self._check_interval == 0:
            return
        self._watcher = threading.Thread(target=self._watch, name="fedvault-policies", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        """Stop the background checks, if ``watch`` started them."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()

    def _watch(self) -> None:
        while not self._stop.wait(self._check_interval):
            try:
                self._refresh(check=True)
            except Exception:  # a reload that fails keeps the set in force
                logger.warning("Could not reload the policy set", exc_info=True)

    @property
    def set_hash(self) -> str:
        """SHA-256 over the names and text hashes of the policies in force (for audit events)."""
        self._refresh()
        return self._snapshot.set_hash

    def invalidate(self) -> None:
        """Reload the policies from the database before the next decision."""
        self._dirty = True

    def validate(self, name: str, text: str) -> None:
        """Check one named policy text before it is stored.

        Raises:
            ConfigError: Bad name, text that does not parse, holds no statement or a
                template, or does not fit the schema; the message says which statement.
        """
        store.check_name(name)
        try:
            parsed = cedarpy.PolicySet.from_str(text)
        except ValueError as e:
            raise ConfigError(f"Policy {name!r} does not parse: {e}") from e
        if parsed.templates():
            raise ConfigError(
                f"Policy {name!r} is a template (?principal / ?resource); write the principal "
                "and resource out instead."
            )
        if len(parsed) == 0:
            raise ConfigError(f"Policy {name!r} holds no permit or forbid statement.")
        result = cedarpy.validate_policies(text, self._schema)
        if not result.validation_passed:
            problems = "; ".join(
                f"statement {int(e.policy_id.removeprefix('policy')) + 1}: {e.error}"
                if e.policy_id.removeprefix("policy").isdigit()
                else str(e)
                for e in result.errors
            )
            raise ConfigError(f"Policy {name!r} does not fit the schema: {problems}")

    def authorize(
        self,
        principal: Principal,
        action: str,
        resource: Resource,
        *,
        context: Mapping[str, Any] | None = None,
    ) -> Decision:
        """Decide whether ``principal`` may do ``action`` (e.g. ``"model:download"``) on it.

        Deny by default; a forbid wins over any permit; any error is a deny.
        """
        self._refresh()
        snapshot = self._snapshot
        if snapshot.compiled is None:
            return Decision(False, (), (snapshot.problem or "no policy set loaded",))
        caller = self._principal_entity(principal)
        key = None if context else _decision_key(caller[2], action, resource)
        if key is not None:
            remembered = snapshot.decisions.get(key)
            if remembered is not None:
                return remembered
        decision = self._decide(
            snapshot.compiled, caller=caller, action=action, resource=resource, context=context
        )
        if key is not None:
            if len(snapshot.decisions) >= _DECISION_CACHE:
                snapshot.decisions.clear()
            snapshot.decisions[key] = decision
        return decision

    def _decide(
        self,
        compiled: CompiledSet,
        *,
        caller: tuple[Uid, frozenset[Uid], str],
        action: str,
        resource: Resource,
        context: Mapping[str, Any] | None,
    ) -> Decision:
        """Cedar's decision over the statements that can apply to this request."""
        p_uid, p_above, p_json = caller
        r_uid, r_above, r_entity = _resource_entity(resource)
        # Cedar's `in` is transitive over the entities sent: a token's owner's projects are
        # the token's ancestors too, when the owner is the caller.
        if p_uid in r_above:
            r_above |= p_above
        if r_uid in p_above:
            p_above |= r_above
        policy_set, local_ids = compiled.select(
            action,
            principal=p_uid,
            principal_above=p_above,
            resource=r_uid,
            resource_above=r_above,
        )
        entities = f"[{p_json}]" if r_uid == p_uid else f"[{p_json},{json.dumps(r_entity)}]"
        request = {
            "principal": _uid(p_uid),
            "action": {"type": "Action", "id": action},
            "resource": r_entity["uid"],
            "context": json.dumps(dict(context)) if context else "{}",
        }
        result = cedarpy.is_authorized(request, policy_set, entities, schema=self._schema)
        names = compiled.names
        ids = {pid: local_ids.get(pid, pid) for pid in result.diagnostics.reasons}
        policies = tuple(sorted({names.get(pid, pid) for pid in ids.values()}))
        errors = tuple(result.diagnostics.errors)
        for local, pid in local_ids.items() if errors else ():
            errors = tuple(error.replace(f"`{local}`", f"`{pid}`") for error in errors)
        if errors:  # a permit that held does not decide when anything failed
            return Decision(False, () if result.allowed else policies, errors)
        return Decision(result.allowed, policies, errors)

    def _principal_entity(self, principal: Principal) -> tuple[Uid, frozenset[Uid], str]:
        """The principal's uid, ancestors and entity JSON (cached: callers repeat)."""
        cached = self._principals.get(principal)
        if cached is not None:
            return cached
        if principal.type == "user":
            uid: Uid = ("User", principal.id)
            above = frozenset(("Project", project) for project in principal.projects)
            if principal.site_id:
                above |= {("Site", principal.site_id)}
            attrs = {"role": principal.role or "", "site": principal.site_id or ""}
        else:
            uid, above, attrs = ("Site", principal.id), frozenset(), {}
        entity = {"uid": _uid(uid), "attrs": attrs, "parents": [_uid(p) for p in sorted(above)]}
        cached = (uid, above, json.dumps(entity))
        if len(self._principals) >= _PRINCIPAL_CACHE:
            self._principals.clear()
        self._principals[principal] = cached
        return cached

    def _due(self, now: float) -> bool:
        return self._watcher is None and now >= self._next_check

    def _refresh(self, *, check: bool = False) -> None:
        """Reload if invalidated, or if the set changed and a check is due (or ``check``)."""
        now = time.monotonic()
        if not self._dirty and not check and not self._due(now):
            return
        with self._lock:
            if not self._dirty and not check and not self._due(now):
                return
            dirty, self._dirty = self._dirty, False
            self._next_check = now + self._check_interval
            try:
                with Session(self._engine) as session:
                    mark = _mark(session)
            except SQLAlchemyError:
                logger.warning("Could not check the policy set for changes", exc_info=True)
                return
            if dirty or mark != self._snapshot.mark:
                self._snapshot = self._load(self._snapshot.compiled)

    def _load(self, previous: CompiledSet | None = None) -> _Snapshot:
        with Session(self._engine) as session:
            mark = _mark(session)
            rows = store.in_force(session)
        digest = hashlib.sha256()
        for row in rows:
            digest.update(f"{row.name}\0{row.sha256}\n".encode())
        set_hash = digest.hexdigest()
        try:
            compiled = CompiledSet(
                {row.name: row.text for row in rows}, groups=self._groups, previous=previous
            )
        except ValueError as e:
            problem = f"The stored policy set could not be loaded ({e}); fix or restore it."
            logger.error("%s Every request is denied until then.", problem)
            return _Snapshot(mark, None, set_hash, problem)
        logger.info("Loaded %d access policies (set %s)", len(rows), set_hash[:12])
        return _Snapshot(mark, compiled, set_hash)


def _mark(session: Session) -> tuple[int, int | None]:
    """What changes whenever a policy version is added or removed: row count and newest id."""
    count, newest = session.exec(
        select(func.count(PolicyVersion.id), func.max(PolicyVersion.id))  # type: ignore[arg-type]
    ).one()
    return int(count), newest


def _decision_key(caller: str, action: str, resource: Resource) -> tuple[Any, ...] | None:
    """Everything a decision depends on besides the policies (``caller``: the principal's
    entity JSON), or None for attribute values other than str, bool and int.

    Types are part of the key: ``True == 1`` in Python, not in Cedar's schema.
    """
    attrs = []
    for name, value in resource.attrs.items():
        if type(value) not in _KEY_TYPES:
            return None
        attrs.append((name, type(value), value))
    attrs.sort()
    return (caller, action, resource.type, resource.id, resource.project, tuple(attrs))


def _resource_entity(resource: Resource) -> tuple[Uid, frozenset[Uid], dict[str, Any]]:
    uid: Uid = (resource.type, resource.id)
    attrs = dict(resource.attrs)
    parents: list[Uid] = []
    if resource.type in _PROJECT_ATTR_TYPES and resource.project is not None:
        attrs["project"] = {"__entity": {"type": "Project", "id": resource.project}}
        parents.append(("Project", resource.project))
    if resource.type == "Model":
        attrs.setdefault("export_allowed", False)
    elif resource.type == "Token":
        owner_type = str(attrs.pop("owner_type", "user"))
        owner = str(attrs.setdefault("owner", ""))
        parents.append(("Site" if owner_type == "site" else "User", owner))
    elif resource.type == "User":
        attrs.setdefault("role", "")
        attrs.setdefault("site", "")
    entity = {"uid": _uid(uid), "attrs": attrs, "parents": [_uid(p) for p in parents]}
    return uid, frozenset(parents), entity
