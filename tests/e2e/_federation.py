"""Shared set-up of the local federations the end-to-end tests run."""

from __future__ import annotations

from fedvault.server.demo.federation import LocalFederation
from fedvault.server.demo.workspace import Workspace


def enrol_site(fed: LocalFederation, workspace: Workspace, site: int, *, partitions: int) -> None:
    """Register site ``site``'s node key and start its SuperNode on its own partition."""
    fed.register(site)
    fed.start_site(
        site,
        {
            "partition-id": site,
            "num-partitions": partitions,
            "site-name": f"site-{site}",
            "site-dir": str(workspace.site_dir(site)),
        },
    )
