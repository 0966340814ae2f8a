"""Tamper-evident audit log: append-only events, hash chain, signed Merkle checkpoints."""

from fedvault.server.audit.events import Receipt
from fedvault.server.audit.export import export_events
from fedvault.server.audit.federation import model_lineage, privacy_spend
from fedvault.server.audit.proofs import prove_consistency, prove_inclusion
from fedvault.server.audit.query import EventFilter, EventPage, query_events
from fedvault.server.audit.reports import actor_activity, denied_actions, who_accessed
from fedvault.server.audit.service import audited_local_action, open_audit_log
from fedvault.server.audit.signing import Checkpoint, PublicKey, SigningKey
from fedvault.server.audit.tables import AuditCheckpoint, AuditEvent, Outcome
from fedvault.server.audit.verify import VerifyReport, verify_log
from fedvault.server.audit.writer import AuditLog

__all__ = [
    # writing
    "AuditLog",
    "Outcome",
    "Receipt",
    "SigningKey",
    "audited_local_action",
    "open_audit_log",
    # verifying
    "Checkpoint",
    "PublicKey",
    "VerifyReport",
    "prove_consistency",
    "prove_inclusion",
    "verify_log",
    # reading
    "EventFilter",
    "EventPage",
    "actor_activity",
    "denied_actions",
    "export_events",
    "model_lineage",
    "privacy_spend",
    "query_events",
    "who_accessed",
    # tables
    "AuditCheckpoint",
    "AuditEvent",
]
