"""A throwaway federation workspace: CA, server certificate and one node key pair per site."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedvault.common.pki import (
    CertificateAuthority,
    generate_node_keys,
    issue_server_certificate,
    write_private,
)
from fedvault.policies import SITE_POLICY_FILE, default_site_policy_text

__all__ = ["Workspace"]


@dataclass(frozen=True)
class Workspace:
    """Paths of everything one local federation needs; private keys are 0600."""

    root: Path
    ca: Path
    cert: Path
    key: Path
    node_keys: tuple[Path, ...]

    @classmethod
    def create(cls, root: Path, *, sites: int) -> Workspace:
        certs = root / "certs"
        certs.mkdir(parents=True, exist_ok=True)
        ca = CertificateAuthority.create(common_name="fedvault demo CA")
        (certs / "ca.pem").write_bytes(ca.certificate_pem())
        cert_pem, key_pem = issue_server_certificate(ca)
        (certs / "server.pem").write_bytes(cert_pem)
        write_private(certs / "server.key", key_pem)
        # The CA key is not needed after issuing: it is never written to disk.
        keys = []
        for i in range(sites):
            private = root / "sites" / f"site-{i}" / "node.key"
            if not private.exists():
                generate_node_keys(f"site-{i}").save(private)
            policy = private.parent / SITE_POLICY_FILE
            if not policy.exists():
                policy.write_text(default_site_policy_text(), encoding="utf-8")
            keys.append(private)
        return cls(root, certs / "ca.pem", certs / "server.pem", certs / "server.key", tuple(keys))

    def site_dir(self, site: int) -> Path:
        """The site's directory: node key, site policy (defaults) and privacy ledger."""
        return self.node_keys[site].parent

    def public_key(self, site: int) -> bytes:
        path = self.node_keys[site]
        return path.with_name(path.name + ".pub").read_bytes()
