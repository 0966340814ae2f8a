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
_CACHE_SIZE = 8192  # policy subsets kept, least recently used dropped first

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


class CompiledSet:
    """Statements of named policies, indexed by action, principal scope and resource scope.

    A statement whose scope cannot match a request is never satisfied and never evaluates its
    conditions, so evaluating only the statements that can match gives Cedar's decision,
    reasons and errors for the whole set. Cedar policy ids are ``<name>#<n>``.
    """

    def __init__(self, texts: Mapping[str, str], *, groups: Mapping[str, frozenset[str]]):
        """Parse every named text. Raises ``ValueError`` naming the policy that fails."""
        self.names: dict[str, str] = {}
        self._nodes: list[pst.Template] = []
        self._matchers: list[tuple[Any, Any]] = []
        self._by_action: dict[str, _ActionIndex] = {action: _ActionIndex() for action in groups}
        self._general: list[bool] = []  # scope names no single entity: applies widely
        self._texts: dict[int, str] = {}
        self._bases: dict[tuple[int, ...], cedarpy.PolicySet] = {}
        self._cache: OrderedDict[tuple[int, ...], Selected] = OrderedDict()
        self._cache_lock = threading.Lock()
        for name, text in texts.items():
            try:
                parsed = cedarpy.PolicySet.from_str(text).to_pst()
                if parsed.templates:
                    raise ValueError("templates (?principal / ?resource) are not supported")
                for n, node in enumerate(parsed.static_policies.values()):
                    self._add(name, f"{name}#{n}", node, groups)
            except ValueError as e:
                raise ValueError(f"policy {name!r}: {e}") from e

    def __len__(self) -> int:
        return len(self._nodes)

    def _add(self, name: str, pid: str, node: pst.Template, groups: Mapping[str, Any]) -> None:
        p_bucket, p_match = _scope(node.principal)
        r_bucket, r_match = _scope(node.resource)
        index = len(self._nodes)
        self.names[pid] = name
        self._nodes.append(dataclasses.replace(node, id=pid))
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

    def select(
        self,
        action: str,
        *,
        principal: Uid,
        principal_above: frozenset[Uid],
        resource: Uid,
        resource_above: frozenset[Uid],
    ) -> Selected:
        """The statements that can apply to this request, as a (cached) Cedar policy set.

        Returns:
            The set, and the Cedar ids in it that are not ``<name>#<n>``, mapped to those.
        """
        index = self._by_action.get(action)
        chosen: tuple[int, ...] = ()
        if index is not None:
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
        with self._cache_lock:
            found = self._cache.get(chosen)
            if found is not None:
                self._cache.move_to_end(chosen)
                return found
        found = self._build(chosen)
        with self._cache_lock:
            self._cache[chosen] = found
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return found

    def _build(self, chosen: tuple[int, ...]) -> Selected:
        """The general statements' set (shared) plus the few specific ones, parsed alone."""
        general = tuple(i for i in chosen if self._general[i])
        specific = [i for i in chosen if not self._general[i]]
        with self._cache_lock:
            base = self._bases.get(general)
        if base is None:
            nodes = {self._nodes[i].id: self._nodes[i] for i in general}
            base = cedarpy.PolicySet.from_pst(
                pst.PolicySet(templates={}, static_policies=nodes, template_links=())
            )
            with self._cache_lock:
                self._bases[general] = base
        if not specific:
            return base, {}
        # Text added to a set gets positional ids (policy0, ...) in its own order.
        policy_set = base.with_added_str("\n".join(self._text(i) for i in specific))
        local = {f"policy{k}": self._nodes[i].id for k, i in enumerate(specific)}
        return policy_set, local

    def _text(self, index: int) -> str:
        text = self._texts.get(index)
        if text is None:
            node = dataclasses.replace(self._nodes[index], annotations={})
            single = pst.PolicySet(templates={}, static_policies={node.id: node}, template_links=())
            text = self._texts[index] = str(cedarpy.PolicySet.from_pst(single))
        return text


def _candidates(
    buckets: Mapping[tuple[Any, ...], list[int]], uid: Uid, above: frozenset[Uid]
) -> list[int]:
    found = list(buckets.get(_ANY, ()))
    found += buckets.get(("is", uid[0]), ())
    found += buckets.get(("uid", uid), ())
    for ancestor in above:
        found += buckets.get(("uid", ancestor), ())
    return found
