"""A ServerApp run's report events, recorded in the audit log before they are reported."""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Mapping
from typing import Any

from fedvault.server.audit.service import open_audit_log
from fedvault.server.audit.tables import Outcome
from fedvault.server.audit.writer import AuditLog, EventFields
from fedvault.server.core.settings import ServerSettings, get_settings

__all__ = [
    "MODEL_STORED",
    "ROUND",
    "RUN_FAILED",
    "RUN_FINISHED",
    "RUN_RESUMED",
    "RUN_STARTED",
    "SITE_FAILED",
    "SITE_REFUSED",
    "UPDATE_REJECTED",
    "RunAudit",
    "audit_events_for",
]

RUN_STARTED = "run.started"
RUN_RESUMED = "run.resumed"
ROUND = "run.round"
RUN_FINISHED = "run.finished"
RUN_FAILED = "run.failed"
MODEL_STORED = "model.stored"
UPDATE_REJECTED = "update.rejected"
SITE_FAILED = "site.failed"
SITE_REFUSED = "site.refused"

ACTOR = "server-app"
_DP_KEYS = (
    "model",
    "dataset",
    "num-server-rounds",
    "min-sites",
    "max-grad-norm",
    "noise-multiplier",
    "target-epsilon",
    "target-delta",
    "accountant",
    "max-update-norm",
    "init-from",
)
_SITE_KEYS = (
    "site",
    "node",
    "epsilon",
    "delta",
    "steps",
    "noise-multiplier",
    "sample-rate",
    "num-examples",
)
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


def _clean(value: Any) -> Any:
    """JSON-safe: plain numbers (numpy's too); non-finite ones become null (JSON has none)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _name(value: Any, limit: int = 256) -> str:
    """A name reported by a site, made printable and short enough to be a resource id."""
    return _UNPRINTABLE.sub("?", str(value))[:limit] or "?"


def _reason(value: Any) -> str:
    return str(value)[:500]


class _RunState:
    """What later events of one run need from earlier ones."""

    def __init__(self) -> None:
        self.run_id = "unknown"
        self.project: str | None = None
        self.privacy: dict[str, dict[str, Any]] = {}


def audit_events_for(event: str, fields: Mapping[str, Any], state: _RunState) -> list[EventFields]:
    """The audit events one run report event stands for (unknown events: none)."""
    fields = _clean(fields)
    state.run_id = _name(fields.get("run_id") or state.run_id, 128)
    if event == "started":
        config = fields.get("config") or {}
        project = config.get("project")
        state.project = _name(project, 128) if project else None

    def make(action: str, details: dict[str, Any], **kw: Any) -> EventFields:
        base: EventFields = {
            "actor": ACTOR,
            "actor_type": "service",
            "action": action,
            "resource_type": "run",
            "resource_id": state.run_id,
            "outcome": Outcome.ALLOWED,
            "project": state.project,
            "details": {"run_id": state.run_id, **details},
        }
        return base | kw  # type: ignore[return-value]

    if event == "started":
        config = fields.get("config") or {}
        return [
            make(
                RUN_STARTED,
                {
                    "sites": fields.get("sites"),
                    "rounds": fields.get("rounds"),
                    "first_round": fields.get("first_round"),
                    "parent": fields.get("parent"),
                    "dp": {k: config[k] for k in _DP_KEYS if k in config},
                },
            )
        ]
    if event == "resumed":
        return [make(RUN_RESUMED, {"round": fields.get("round")})]
    if event == "round":
        return _round_events(fields, state, make)
    if event == "stored":
        model = _name(fields.get("model"))
        details = {
            "round": fields.get("round"),
            "model": model,
            "sha256": fields.get("sha256"),
            "privacy": state.privacy,
        }
        return [make(MODEL_STORED, details, resource_type="model", resource_id=model)]
    if event == "finished":
        details = {k: fields.get(k) for k in ("model", "rounds", "accuracy", "loss")}
        for key in ("epsilon", "run_epsilon"):  # per site, named as in the round events
            details[key] = {_name(site): e for site, e in (fields.get(key) or {}).items()}
        return [make(RUN_FINISHED, details)]
    if event == "failed":
        return [make(RUN_FAILED, {"reason": _reason(fields.get("reason"))}, outcome=Outcome.FAILED)]
    return []


def _round_events(
    fields: Mapping[str, Any], state: _RunState, make: Callable[..., EventFields]
) -> list[EventFields]:
    server_round = fields.get("round")
    sites = [{k: s[k] for k in _SITE_KEYS if k in s} for s in fields.get("sites") or []]
    for s in sites:
        s["site"] = _name(s.get("site"))
        if "node" in s:  # Flower node ids are 64-bit: past JSON's exact integers
            s["node"] = str(s["node"])
        state.privacy[s["site"]] = {k: s.get(k) for k in ("epsilon", "delta")}
    rejected = fields.get("rejected") or []
    failed = fields.get("failed") or []
    refused = fields.get("refused") or []
    events = [
        make(
            ROUND,
            {
                "round": server_round,
                "accuracy": fields.get("accuracy"),
                "loss": fields.get("loss"),
                "sites": sites,
                "rejected": len(rejected),
                "failed": len(failed),
                "refused": len(refused),
            },
        )
    ]
    for action, entries, outcome in (
        (UPDATE_REJECTED, rejected, Outcome.DENIED),
        (SITE_FAILED, failed, Outcome.FAILED),
        (SITE_REFUSED, refused, Outcome.DENIED),
    ):
        for entry in entries:
            site = _name(entry.get("site") or f"node-{entry.get('node')}")
            details = {"round": server_round, "node": str(entry.get("node"))}
            details["reason"] = _reason(entry.get("reason"))
            events.append(
                make(action, details, resource_type="site", resource_id=site, outcome=outcome)
            )
    return events


class RunAudit:
    """Records a run's report events as audit events; each is committed before returning.

    The log is opened on the first event (``opener`` returning None means the run is not
    audited) and closed, with a final checkpoint, after the run finishes or fails.
    """

    def __init__(self, opener: Callable[[], AuditLog | None]):
        self._opener = opener
        self._log: AuditLog | None = None
        self._off = False
        self._state = _RunState()

    @classmethod
    def from_settings(cls, settings: ServerSettings | None = None) -> RunAudit:
        """Audit into the configured data directory, if one is configured.

        Settings are read at the first event, so a bad setting fails the run like any
        other error instead of failing before the run can report it.
        """

        def opener() -> AuditLog | None:
            resolved = settings or get_settings()
            return open_audit_log(resolved) if resolved.data_dir is not None else None

        return cls(opener)

    def record(self, event: str, fields: Mapping[str, Any]) -> None:
        """Commit the audit events for one report event.

        Raises:
            FedvaultError: they could not be committed; the run must not go on as if done.
        """
        records = audit_events_for(event, fields, self._state)
        if not records or self._off:
            return
        if self._log is None:
            self._log = self._opener()
            if self._log is None:
                self._off = True
                return
        futures = [self._log.submit(**r) for r in records]
        for future in futures:
            future.result()
        if event in ("finished", "failed"):
            self.close()

    def close(self) -> None:
        if self._log is not None:
            log, self._log = self._log, None
            log.close()
            log.engine.dispose()
