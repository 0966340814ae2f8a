"""Audit routes: query and export events, verify the log, proofs, the public key, reports."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict

from fedvault.server.api.deps import ServicesDep, audit_note, require
from fedvault.server.api.routes._audit_reports import parse_when
from fedvault.server.api.routes._audit_reports import router as reports_router
from fedvault.server.api.schemas import ERROR_RESPONSES
from fedvault.server.audit.export import export_events
from fedvault.server.audit.proofs import prove_consistency, prove_inclusion, signed_checkpoint
from fedvault.server.audit.query import MAX_PAGE, EventFilter, query_events
from fedvault.server.audit.tables import Outcome
from fedvault.server.audit.verify import verify_log
from fedvault.server.authz.engine import Resource

__all__ = [
    "AUDIT_LOG",
    "AuditEventPublic",
    "ConsistencyProofPublic",
    "EventPagePublic",
    "InclusionProofPublic",
    "PublicKeyPublic",
    "VerifyResult",
    "audit_resource",
    "router",
]

# The reports' routes carry their whole path, so they join this router's list as they are.
router = APIRouter(
    prefix="/v1/audit", tags=["audit"], responses=ERROR_RESPONSES, routes=reports_router.routes
)

AUDIT_LOG = Resource("AuditLog", "log")
_MEDIA = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}
_Text = Annotated[str | None, Query(min_length=1, max_length=256)]
_Time = Annotated[
    str | None, Query(max_length=64, description="ISO 8601 time with a timezone, or a date.")
]


async def audit_resource() -> Resource:
    """The audit log: target of every audit action."""
    return AUDIT_LOG


class AuditEventPublic(BaseModel):
    """One recorded action (the chain hashes are in exports and proofs, not here)."""

    model_config = ConfigDict(extra="forbid")

    seq: int
    time: str
    actor: str
    actor_type: str
    action: str
    resource_type: str
    resource_id: str
    project: str | None
    outcome: str
    policy: str | None
    source: str | None
    request_id: str | None
    details: dict[str, Any]


class EventPagePublic(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[AuditEventPublic]
    next_cursor: str | None


class VerifyResult(BaseModel):
    """What verification found; ``problem`` is None when the log is intact."""

    model_config = ConfigDict(extra="forbid")

    ok: bool
    events: int
    checkpoints: int
    signed_through: int
    unsigned: int
    first_bad_event: int | None
    failed_checkpoint: int | None
    problem: str | None
    key_id: str


class InclusionProofPublic(BaseModel):
    """An RFC 9162 audit path from event ``seq`` to a signed checkpoint."""

    model_config = ConfigDict(extra="forbid")

    seq: int
    leaf_index: int
    tree_size: int
    event: dict[str, Any]
    event_json: str
    prev_hash: str
    leaf_hash: str
    path: list[str]
    root: str
    checkpoint: str


class ConsistencyProofPublic(BaseModel):
    """Proof that the log at ``new`` events extends the log at ``old`` events unchanged."""

    model_config = ConfigDict(extra="forbid")

    old: int
    new: int
    old_root: str
    new_root: str
    path: list[str]
    old_checkpoint: str
    new_checkpoint: str


class PublicKeyPublic(BaseModel):
    """The key that signs checkpoints: give it to auditors to verify copies offline."""

    model_config = ConfigDict(extra="forbid")

    key_id: str
    origin: str
    pem: str
    vkey: str


def _filter(
    actor: _Text = None,
    action: _Text = None,
    resource_type: _Text = None,
    resource_id: _Text = None,
    project: _Text = None,
    outcome: Annotated[Literal["allowed", "denied", "failed"] | None, Query()] = None,
    since: _Time = None,
    until: _Time = None,
) -> EventFilter:
    return EventFilter(
        actor=actor,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        project=project,
        outcome=None if outcome is None else Outcome(outcome),
        since=parse_when(since, name="since"),
        until=parse_when(until, name="until"),
    )


Filter = Annotated[EventFilter, Depends(_filter)]
_ReadAudit = Depends(require("audit:read", audit_resource))


@router.get("/events", response_model=EventPagePublic, dependencies=[_ReadAudit])
def list_events(
    services: ServicesDep,
    flt: Filter,
    cursor: Annotated[str | None, Query(max_length=20, pattern=r"^[0-9]*$")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> EventPagePublic:
    """One page of matching events, oldest first; pass ``next_cursor`` back for the next."""
    page = query_events(services.audit.engine, flt, cursor=cursor, limit=limit)
    events = [
        AuditEventPublic(**{k: v for k, v in e.items() if k not in ("prev_hash", "hash")})
        for e in page.events
    ]
    return EventPagePublic(events=events, next_cursor=page.next_cursor)


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}, "text/csv": {}}}},
    dependencies=[Depends(require("audit:export", audit_resource))],
)
def export(
    request: Request,
    services: ServicesDep,
    flt: Filter,
    fmt: Annotated[Literal["jsonl", "csv"], Query(alias="format")] = "jsonl",
) -> StreamingResponse:
    """Every matching event as JSON lines (with chain hashes, re-verifiable) or CSV."""
    wanted = {k: str(v) for k, v in vars(flt).items() if v is not None}
    audit_note(request, format=fmt, filter=wanted)
    chunks = export_events(services.audit.engine, flt, fmt=fmt)
    headers = {"Content-Disposition": f'attachment; filename="audit-events.{fmt}"'}
    return StreamingResponse(chunks, media_type=_MEDIA[fmt], headers=headers)


@router.post(
    "/verify",
    response_model=VerifyResult,
    dependencies=[Depends(require("audit:verify", audit_resource))],
)
def verify(services: ServicesDep) -> VerifyResult:
    """Recompute every event's hash and the chain, and check every signed checkpoint."""
    key = services.audit.signing_key.public
    report = verify_log(services.audit.engine, key)
    return VerifyResult(
        ok=report.ok,
        events=report.events,
        checkpoints=report.checkpoints,
        signed_through=report.signed_size,
        unsigned=report.unsigned,
        first_bad_event=report.first_bad_event,
        failed_checkpoint=report.failed_checkpoint,
        problem=report.problem,
        key_id=key.key_id.hex(),
    )


@router.get(
    "/proofs/inclusion/{seq}", response_model=InclusionProofPublic, dependencies=[_ReadAudit]
)
def inclusion(
    services: ServicesDep,
    seq: Annotated[int, Path(ge=1, le=2**62, description="The event's sequence number.")],
    tree_size: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> InclusionProofPublic:
    """Prove event ``seq`` is in the log signed at ``tree_size`` events (newest by default)."""
    key = services.audit.signing_key.public
    proof = prove_inclusion(services.audit.engine, key, seq, tree_size=tree_size)
    return InclusionProofPublic(
        seq=proof.seq,
        leaf_index=proof.seq - 1,
        tree_size=proof.checkpoint.tree_size,
        event=json.loads(proof.event_json),
        event_json=proof.event_json,
        prev_hash=proof.prev_hash.hex(),
        leaf_hash=proof.leaf.hex(),
        path=[p.hex() for p in proof.path],
        root=proof.checkpoint.root.hex(),
        checkpoint=proof.checkpoint.to_note(),
    )


@router.get("/proofs/consistency", response_model=ConsistencyProofPublic, dependencies=[_ReadAudit])
def consistency(
    services: ServicesDep,
    old: Annotated[int, Query(ge=0, le=2**62, description="Size of the older checkpoint.")],
    new: Annotated[
        int | None, Query(ge=1, le=2**62, description="Size of the newer (default newest).")
    ] = None,
) -> ConsistencyProofPublic:
    """Prove the checkpoint at ``new`` events extends the one at ``old`` events."""
    key = services.audit.signing_key.public
    proof = prove_consistency(services.audit.engine, key, old, new)
    return ConsistencyProofPublic(
        old=proof.first.tree_size,
        new=proof.second.tree_size,
        old_root=proof.first.root.hex(),
        new_root=proof.second.root.hex(),
        path=[p.hex() for p in proof.path],
        old_checkpoint=proof.first.to_note(),
        new_checkpoint=proof.second.to_note(),
    )


@router.get("/checkpoint", dependencies=[_ReadAudit])
def checkpoint(services: ServicesDep) -> dict[str, Any]:
    """The newest signed checkpoint; keep it to detect a truncated log later."""
    newest = signed_checkpoint(services.audit.engine, services.audit.signing_key.public)
    return {"tree_size": newest.tree_size, "root": newest.root.hex(), "note": newest.to_note()}


@router.get("/public-key", response_model=PublicKeyPublic, dependencies=[_ReadAudit])
def public_key(services: ServicesDep) -> PublicKeyPublic:
    """The public key checkpoint signatures verify with, as PEM and as a C2SP vkey."""
    key = services.audit.signing_key.public
    return PublicKeyPublic(
        key_id=key.key_id.hex(), origin=key.origin, pem=key.to_pem(), vkey=key.to_vkey()
    )
