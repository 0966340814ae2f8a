"""Site routes: register a node key on the SuperLink's allow-list, list, show, revoke."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field
from sqlmodel import Session

from fedvault.common.errors import FedvaultError, NotFound
from fedvault.server.api.deps import (
    CurrentPrincipal,
    ServicesDep,
    SessionDep,
    audit_note,
    not_found,
    require,
)
from fedvault.server.api.schemas import (
    ERROR_RESPONSES,
    Identifier,
    IdPath,
    PublicModel,
    RequestModel,
)
from fedvault.server.api.services import Services
from fedvault.server.authz.engine import Resource
from fedvault.server.identity import service as identity
from fedvault.server.identity.tables import Site, SiteStatus

__all__ = ["SiteCreate", "SitePublic", "router", "site_resource"]

log = logging.getLogger("fedvault.server.api")

router = APIRouter(prefix="/v1/sites", tags=["sites"], responses=ERROR_RESPONSES)


class SiteCreate(RequestModel):
    """A new site: its id and the node public key its SuperNode authenticates with."""

    id: Identifier
    public_key: str = Field(
        min_length=1,
        max_length=4096,
        description="The node public key, one OpenSSH line ('ecdsa-sha2-nistp384 AAAA...').",
    )
    description: str = Field(default="", max_length=1000)


class SitePublic(PublicModel):
    """A site as the API shows it; ``connection`` is what the SuperLink says of its node."""

    id: str
    description: str
    public_key: str
    node_id: str | None = Field(
        description="Flower's node id, as decimal text: it is an unsigned 64-bit number, "
        "beyond the integers JSON numbers carry exactly in JavaScript."
    )
    status: str
    connection: str = Field(
        description="online, offline, registered (never connected), unregistered, or unknown "
        "(the federation is not running)."
    )
    created_by: str
    created_at: datetime
    revoked_at: datetime | None


def site_resource(site_id: IdPath, session: SessionDep) -> Resource:
    """The site named in the path."""
    try:
        return Resource("Site", identity.get_site(session, site_id).id)
    except NotFound:
        raise not_found("Site", site_id) from None


def _connections(services: Services) -> dict[int, str] | None:
    """Node id -> status from the SuperLink, or None when it cannot be asked."""
    if services.federation is None:
        return None
    try:
        return {node.node_id: node.status for node in services.federation.nodes()}
    except FedvaultError as e:
        log.warning("Could not list the SuperLink's nodes: %s", e)
        return None


def _public(site: Site, connections: dict[int, str] | None) -> SitePublic:
    if site.status == SiteStatus.REVOKED:
        connection = "unregistered"
    elif connections is None or site.node_id is None:
        connection = "unknown"
    else:
        connection = connections.get(site.node_id, "unregistered")
    return SitePublic(
        id=site.id,
        description=site.description,
        public_key=site.public_key,
        node_id=None if site.node_id is None else str(site.node_id),
        status=site.status,
        connection=connection,
        created_by=site.created_by,
        created_at=site.created_at,
        revoked_at=site.revoked_at,
    )


def _forget(session: Session, site: Site) -> None:
    """Remove a site whose registration did not complete."""
    session.delete(site)
    session.commit()


@router.post(
    "",
    status_code=201,
    response_model=SitePublic,
    dependencies=[Depends(require("site:register"))],
)
def register_site(
    body: SiteCreate,
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    services: ServicesDep,
) -> SitePublic:
    """Record the site and put its node key on the SuperLink's allow-list.

    If the SuperLink refuses or cannot be reached, the site is not kept (503).
    """
    federation = services.require_federation()
    site = identity.add_site(
        session,
        site_id=body.id,
        public_key=body.public_key,
        created_by=principal.id,
        description=body.description,
    )
    try:
        node_id = federation.register_node(site.public_key.encode("ascii"), name=site.id)
    except FedvaultError:
        _forget(session, site)  # nothing was enrolled: leave no trace but the audit event
        raise
    try:
        site = identity.set_site_node(session, site_id=site.id, node_id=node_id)
    except BaseException:
        session.rollback()
        federation.unregister_node(node_id)  # enrolled but not recorded: undo the enrollment
        _forget(session, site)
        raise
    audit_note(request, node_id=str(node_id))  # may exceed 2**53: JSON-safe as text
    return _public(site, {node_id: "registered"})


@router.get("", response_model=list[SitePublic], dependencies=[Depends(require("site:list"))])
def list_sites(
    session: SessionDep,
    services: ServicesDep,
    status: Annotated[SiteStatus | None, Query(description="Only sites in this state.")] = None,
) -> list[SitePublic]:
    """Every site, by id, with its node's connection state when the federation runs."""
    connections = _connections(services)
    sites = identity.list_sites(session, status=status.value if status else None)
    return [_public(site, connections) for site in sites]


@router.get("/{site_id}", response_model=SitePublic)
def get_site(
    site_id: IdPath,
    session: SessionDep,
    services: ServicesDep,
    _: Annotated[Resource, Depends(require("site:read", site_resource))],
) -> SitePublic:
    """One site, with its node's connection state when the federation runs."""
    return _public(identity.get_site(session, site_id), _connections(services))


@router.delete("/{site_id}", response_model=SitePublic)
def revoke_site(
    site_id: IdPath,
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    services: ServicesDep,
    _: Annotated[Resource, Depends(require("site:revoke", site_resource))],
) -> SitePublic:
    """Take the site's key off the allow-list, then revoke the site and its tokens.

    If the SuperLink cannot be reached, nothing changes (503). Revoking twice is harmless.
    """
    site = identity.get_site(session, site_id)
    if site.status != SiteStatus.REVOKED:
        federation = services.require_federation()
        if site.node_id is not None:
            federation.unregister_node(site.node_id)
        audit_note(request, node_id=None if site.node_id is None else str(site.node_id))
        site = identity.revoke_site(session, site_id=site_id, by=principal.id)
    return _public(site, None)
