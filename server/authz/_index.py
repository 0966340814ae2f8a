"""A compiled policy set whose statements are indexed by scope, so a request evaluates few."""

from __future__ import annotations

import dataclasses
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import cedarpy
from cedarpy import pst

__all__ = ["CompiledSet", "Selected", "Uid", "action_groups"]

Uid = tuple[str, str]  # (entity type, id)
Selected = tuple[cedarpy.PolicySet, dict[str, str]]
_ANY = ("any",)
_CACHE_SIZE = (
    8192  # sets for requests reaching several filed uids, least recently used dropped first
)

_ACTION_DECL = re.compile(
    r'\baction\s+((?:"[^"]*"|[A-Za-z_]\w*)(?:\s*,\s*(?:"[^"]*"|[A-Za-z_]\w*))*)'
    r'(?:\s+in\s+(\[[^\]]*\]|(?:\w+::)*"[^"]*"|[A-Za-z_]\w*))?'
)
_ACTION_NAME = re.compile(r'"([^"]*)"|([A-Za-z_]\w*)')


def _names(text: str) -> list[str]:
    found = []
    for quoted, bare in _ACTION_NAME.findall(text):
        if quoted or bare not in ("Action",):
            found.append(quoted or bare)
    return found


def action_groups(schema_text: str) -> dict[str, frozenset[str]]:
    """Every action the schema declares, with all the action groups it is in (transitively)."""
    text = re.sub(r"//[^\n]*", "", schema_text)
    parents: dict[str, set[str]] = {}
    for declared, groups in _ACTION_DECL.findall(text):
        for name in _names(declared):
            parents.setdefault(name, set()).update(_names(groups) if groups else ())
    closed: dict[str, frozenset[str]] = {}
    for name in parents:
        seen: set[str] = set()
        stack = list(parents[name])
        while stack:
            group = stack.pop()
            if group not in seen:
                seen.add(group)
                stack.extend(parents.get(group, ()))
        closed[name] = frozenset(seen)
    return closed


def _uid(node: pst.EntityUid) -> Uid:
    return ("::".join((*node.type.namespace, node.type.basename)), node.id)


def _type(node: pst.EntityType) -> str:
    return "::".join((*node.namespace, node.basename))


def _scope(node: Any) -> tuple[tuple[Any, ...], tuple[str, str | None, Uid | None]]:
    """(index bucket, matcher) for a principal or resource scope; matcher = (kind, type, uid)."""
    if isinstance(node, pst.ScopeAny):
        return _ANY, ("any", None, None)
    if isinstance(node, pst.ScopeIs):
        return ("is", _type(node.entity_type)), ("is", _type(node.entity_type), None)
    if isinstance(node, pst.ScopeEq | pst.ScopeIn | pst.ScopeIsIn):
        if not isinstance(node.entity, pst.EntityUid):
            raise ValueError("policy templates (?principal / ?resource slots) are not supported")
        uid = _uid(node.entity)
        if isinstance(node, pst.ScopeEq):
            return ("uid", uid), ("eq", None, uid)
        if isinstance(node, pst.ScopeIn):
            return ("uid", uid), ("in", None, uid)
        return ("uid", uid), ("isin", _type(node.entity_type), uid)
    raise ValueError(f"unsupported policy scope {type(node).__name__}")


def _matches(matcher: tuple[str, str | None, Uid | None], uid: Uid, above: frozenset[Uid]) -> bool:
    kind, etype, target = matcher
    if kind == "any":
        return True
    if kind == "is":
        return uid[0] == etype
    if kind == "eq":
        return uid == target
    if kind == "in":
        return uid == target or target in above
    return uid[0] == etype and (uid == target or target in above)


@dataclasses.dataclass
class _ActionIndex:
    principal: dict[tuple[Any, ...], list[int]] = dataclasses.field(default_factory=dict)
    resource: dict[tuple[Any, ...], list[int]] = dataclasses.field(default_factory=dict)
    general: list[int] = dataclasses.field(default_factory=list)
    # Specific statements filed under the one uid their scope names (the resource's if both
    # sides name one): such a statement can only match requests at or below that uid.
    by_resource: dict[Uid, list[int]] = dataclasses.field(default_factory=dict)
    by_principal: dict[Uid, list[int]] = dataclasses.field(default_factory=dict)
    # Built when the set is loaded: the general statements alone (key None), and with the
    # statements filed under each uid.
    sets: dict[tuple[str, Uid] | None, Selected] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class _Parsed:
    """One named policy text, parsed: its statements and each one's text on its own."""

    nodes: tuple[pst.Template, ...]
    texts: tuple[str, ...]


class CompiledSet:
    """Statements of named policies, indexed by action, principal scope and resource scope.

    A statement whose scope cannot match a request is never satisfied and never evaluates its
    conditions, so evaluating a set that holds every statement that can match (and perhaps
    some that cannot) gives Cedar's decision, reasons and errors for the whole set. Cedar
    policy ids are ``<name>#<n>``.

    Every set a request can need is built when the policies are loaded, except for requests
    that reach specific statements filed under two or more uids (e.g. a forbid naming the
    caller and a permit naming the resource's project): those get exactly the statements
    that match, built on first use and cached. ``previous`` lends its parsed texts and built
    sets to a reload, so only what changed is parsed and built again.
    """

    def __init__(
        self,
        texts: Mapping[str, str],
        *,
        groups: Mapping[str, frozenset[str]],
        previous: CompiledSet | None = None,
    ):
        """Parse every named text. Raises ``ValueError`` naming the policy that fails."""
        self.names: dict[str, str] = {}
        self._nodes: list[pst.Template] = []
        self._texts: list[str] = []
        self._keys: list[tuple[str, str]] = []  # (id, whole text of its policy): reuse key
        self._matchers: list[tuple[Any, Any]] = []
        self._general: list[bool] = []  # scope names no single entity: applies widely
        self._by_action: dict[str, _ActionIndex] = {action: _ActionIndex() for action in groups}
        self._parsed: dict[tuple[str, str], _Parsed] = {}
        self._built: dict[tuple[tuple[tuple[str, str], ...], ...], Selected] = {}
        self._cache: OrderedDict[tuple[str, tuple[int, ...]], Selected] = OrderedDict()
        self._cache_lock = threading.Lock()
        reuse_parsed = previous._parsed if previous is not None else {}
        for name, text in texts.items():
            try:
                parsed = reuse_parsed.get((name, text)) or _parse(text)
                for n, (node, alone) in enumerate(zip(parsed.nodes, parsed.texts, strict=True)):
                    self._add(name, f"{name}#{n}", node, alone, text, groups)
            except ValueError as e:
                raise ValueError(f"policy {name!r}: {e}") from e
            self._parsed[name, text] = parsed
        self._prebuild(previous._built if previous is not None else {})

    def __len__(self) -> int:
        return len(self._nodes)

    def _add(
        self,
        name: str,
        pid: str,
        node: pst.Template,
        statement: str,
        text: str,
        groups: Mapping[str, Any],
    ) -> None:
        p_bucket, p_match = _scope(node.principal)
        r_bucket, r_match = _scope(node.resource)
        index = len(self._nodes)
        self.names[pid] = name
        self._nodes.append(dataclasses.replace(node, id=pid))
        self._texts.append(statement)
        self._keys.append((pid, text))
        self._matchers.append((p_match, r_match))
        self._general.append(p_bucket[0] != "uid" and r_bucket[0] != "uid")
        if isinstance(node.action, pst.ActionEq):
            listed = {_uid(node.action.entity)[1]}
        elif isinstance(node.action, pst.ActionIn):
            listed = {_uid(entity)[1] for entity in node.action.entities}
        else:
            listed = None  # any action
        for action, action_index in self._by_action.items():
            if listed is None or action in listed or not listed.isdisjoint(groups[action]):
                action_index.principal.setdefault(p_bucket, []).append(index)
                action_index.resource.setdefault(r_bucket, []).append(index)
                if r_bucket[0] == "uid":
                    action_index.by_resource.setdefault(r_bucket[1], []).append(index)
                elif p_bucket[0] == "uid":
                    action_index.by_principal.setdefault(p_bucket[1], []).append(index)
                else:
                    action_index.general.append(index)

    def _prebuild(self, previous: Mapping[Any, Selected]) -> None:
        """Build, for every action, its general statements' set and one per filed uid."""
        # Actions with the same general statements share one set per uid, holding the
        # statements filed there for any of them (the others' action scope never matches).
        shared: dict[tuple[tuple[int, ...], tuple[str, Uid]], set[int]] = {}
        for action_index in self._by_action.values():
            general = tuple(action_index.general)
            for side, filed in (
                ("resource", action_index.by_resource),
                ("principal", action_index.by_principal),
            ):
                for uid, members in filed.items():
                    shared.setdefault((general, (side, uid)), set()).update(members)
        for action_index in self._by_action.values():
            general = tuple(action_index.general)
            action_index.sets[None] = self._build(general, (), previous)
            for side, filed in (
                ("resource", action_index.by_resource),
                ("principal", action_index.by_principal),
            ):
                for uid in filed:
                    chosen = tuple(sorted(shared[general, (side, uid)]))
                    action_index.sets[side, uid] = self._build(general, chosen, previous)
        self._empty = self._build((), (), previous)

    def select(
        self,
        action: str,
        *,
        principal: Uid,
        principal_above: frozenset[Uid],
        resource: Uid,
        resource_above: frozenset[Uid],
    ) -> Selected:
        """A Cedar policy set holding every statement that can apply to this request.

        Returns:
            The set, and the Cedar ids in it that are not ``<name>#<n>``, mapped to those.
        """
        index = self._by_action.get(action)
        if index is None:  # not an action of the schema: nothing applies (Cedar says why)
            return self._empty
        filed: tuple[str, Uid] | None = None
        for side, uids, above in (
            ("resource", index.by_resource, resource_above),
            ("principal", index.by_principal, principal_above),
        ):
            if not uids:
                continue
            for uid in (resource if side == "resource" else principal, *above):
                if uid in uids:
                    if filed is not None:
                        return self._exact(
                            action,
                            index,
                            principal=principal,
                            principal_above=principal_above,
                            resource=resource,
                            resource_above=resource_above,
                        )
                    filed = (side, uid)
        return index.sets[filed]

    def _exact(
        self,
        action: str,
        index: _ActionIndex,
        *,
        principal: Uid,
        principal_above: frozenset[Uid],
        resource: Uid,
        resource_above: frozenset[Uid],
    ) -> Selected:
        """Just the statements that match, for a request that reaches several filed uids."""
        p_side = _candidates(index.principal, principal, principal_above)
        r_side = _candidates(index.resource, resource, resource_above)
        chosen = tuple(
            sorted(
                i
                for i in (p_side if len(p_side) <= len(r_side) else r_side)
                if _matches(self._matchers[i][0], principal, principal_above)
                and _matches(self._matchers[i][1], resource, resource_above)
            )
        )
        specific = tuple(i for i in chosen if not self._general[i])
        key = (action, specific)
        with self._cache_lock:
            found = self._cache.get(key)
            if found is not None:
                self._cache.move_to_end(key)
                return found
        found = self._with_added(index.sets[None], specific)
        with self._cache_lock:
            self._cache[key] = found
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return found

    def _build(
        self,
        general: tuple[int, ...],
        specific: tuple[int, ...],
        previous: Mapping[Any, Selected],
    ) -> Selected:
        """The general statements' set (shared) plus the specific ones.

        A set the previous load built from the very same statements is taken as it is.
        """
        base_key = (tuple(self._keys[i] for i in general),)
        key = (*base_key, tuple(self._keys[i] for i in specific))
        found = self._built.get(key) or previous.get(key)
        if found is None:
            base = self._built.get(base_key) or previous.get(base_key)
            if base is None:
                nodes = {self._nodes[i].id: self._nodes[i] for i in general}
                base_set = cedarpy.PolicySet.from_pst(
                    pst.PolicySet(templates={}, static_policies=nodes, template_links=())
                )
                base = (base_set, {})
            self._built[base_key] = base
            found = self._with_added(base, specific)
        self._built[key] = found
        return found

    def _with_added(self, base: Selected, specific: tuple[int, ...]) -> Selected:
        if not specific:
            return base
        # Text added to a set gets positional ids (policy0, ...) in its own order.
        policy_set = base[0].with_added_str("\n".join(self._texts[i] for i in specific))
        local = {f"policy{k}": self._nodes[i].id for k, i in enumerate(specific)}
        return policy_set, local


def _parse(text: str) -> _Parsed:
    """A named policy's statements, and each one's text on its own (annotations dropped)."""
    parsed = cedarpy.PolicySet.from_str(text).to_pst()
    if parsed.templates:
        raise ValueError("templates (?principal / ?resource) are not supported")
    nodes = tuple(parsed.static_policies.values())
    if len(nodes) == 1 and not nodes[0].annotations:
        return _Parsed(nodes, (text,))
    return _Parsed(nodes, tuple(_alone(node) for node in nodes))


def _alone(node: pst.Template) -> str:
    node = dataclasses.replace(node, annotations={})
    single = pst.PolicySet(templates={}, static_policies={node.id: node}, template_links=())
    return str(cedarpy.PolicySet.from_pst(single))


def _candidates(
    buckets: Mapping[tuple[Any, ...], list[int]], uid: Uid, above: frozenset[Uid]
) -> list[int]:
    found = list(buckets.get(_ANY, ()))
    found += buckets.get(("is", uid[0]), ())
    found += buckets.get(("uid", uid), ())
    for ancestor in above:
        found += buckets.get(("uid", ancestor), ())
    return found
