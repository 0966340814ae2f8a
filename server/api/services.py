"""What the admin API holds open while it runs: database, audit log, store, policies, keys."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram
from sqlalchemy.engine import Engine
from sqlmodel import Session

from fedvault.common.errors import FederationError
from fedvault.server.api._principals import PrincipalCache
from fedvault.server.audit.service import open_audit_log
from fedvault.server.audit.writer import AuditLog
from fedvault.server.authz import store as policy_store
from fedvault.server.authz.engine import PolicyEngine
from fedvault.server.core.db import open_database
from fedvault.server.core.settings import ServerSettings
from fedvault.server.identity import FailedLoginLimiter, load_pepper
from fedvault.server.serve.control import FederationControl, control_from_settings
from fedvault.server.store.from_settings import open_store
from fedvault.server.store.service import ModelStore

__all__ = ["Metrics", "Services", "close_services", "open_services"]

log = logging.getLogger("fedvault.server.api")

API_POOL_SIZE = 40
FEDERATION_DOWN = "The federation is not running; start it with `fedvault server start`."


@dataclass
class Metrics:
    """The API's own Prometheus metrics, in a registry per app (tests build many apps)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    _children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = field(
        default_factory=dict, init=False, repr=False
    )

    def observe(self, *, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency (labelled series looked up once)."""
        key = (method, route, status)
        found = self._children.get(key)
        if found is None:  # label values are bounded: methods, route templates, statuses
            found = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
            self._children[key] = found
        found[0].inc()
        found[1].observe(seconds)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "fedvault_api_requests",
            "Admin API requests by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fedvault_api_request_seconds",
            "Admin API request latency until the response starts.",
            ["method", "route"],
            registry=self.registry,
        )


@dataclass
class Services:
    """Everything a request handler may use, opened once by the app's lifespan.

    ``federation`` is None while no SuperLink runs (``federation_address`` unset): run and
    site routes then answer 503 through ``require_federation``.
    """

    settings: ServerSettings
    engine: Engine
    audit: AuditLog
    store: ModelStore
    policy: PolicyEngine
    pepper: bytes
    limiter: FailedLoginLimiter
    principals: PrincipalCache
    federation: FederationControl | None = None
    metrics: Metrics = field(default_factory=Metrics)

    def require_federation(self) -> FederationControl:
        """The federation client.

        Raises:
            FederationError: no federation is running (answered 503).
        """
        if self.federation is None:
            raise FederationError(FEDERATION_DOWN)
        return self.federation


def open_services(settings: ServerSettings) -> Services:
    """Open the database (migrated), audit log, model store and policy engine of ``settings``.

    Raises:
        ConfigError: no data directory, or the database cannot be opened.
        KeyMaterialError: a key (audit signing, KEK, token pepper) is missing or unsafe.
    """
    # One kept connection per request worker thread (anyio's pool has 40), so requests queue
    # on threads, not on connections, and a connection is never closed and reopened between
    # requests (a closing connection blocks whichever thread returns it, often the event
    # loop). The audit writer has its own engine and connection, so busy requests can never
    # starve the log they wait on.
    engine = open_database(settings.resolved_database_url(), pool_size=API_POOL_SIZE)
    try:
        with Session(engine) as session:
            seeded = policy_store.seed_defaults(session)
        if seeded:
            log.info("Seeded %d default access policies", seeded)
        audit = open_audit_log(settings)
    except BaseException:
        engine.dispose()
        raise
    policy = None
    try:
        policy = PolicyEngine(engine=engine)
        policy.watch()  # decisions on the event loop never wait for the change check
        return Services(
            settings=settings,
            engine=engine,
            audit=audit,
            store=open_store(settings),
            policy=policy,
            pepper=load_pepper(settings),
            limiter=FailedLoginLimiter(per_minute=settings.auth_failures_per_minute),
            principals=PrincipalCache(ttl=settings.auth_cache_seconds),
            federation=control_from_settings(settings),
        )
    except BaseException:
        if policy is not None:
            policy.close()
        audit.close()
        audit.engine.dispose()
        engine.dispose()
        raise


def close_services(services: Services) -> None:
    """Commit what the audit log holds, then release database connections."""
    services.policy.close()
    services.audit.close()
    services.audit.engine.dispose()
    services.store.engine.dispose()
    services.engine.dispose()
