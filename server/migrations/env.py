"""Alembic environment: migrations run on a connection handed over by fedvault.server.core.db."""

from __future__ import annotations

from alembic import context

from fedvault.server.audit import tables as audit_tables  # noqa: F401  (registers tables)
from fedvault.server.authz import tables as authz_tables  # noqa: F401
from fedvault.server.identity import tables as identity_tables  # noqa: F401
from fedvault.server.runs import tables as run_tables  # noqa: F401
from fedvault.server.store import tables  # noqa: F401  (registers the tables' metadata)
from fedvault.server.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("Run migrations through fedvault.server.core.db.upgrade().")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
