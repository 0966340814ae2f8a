"""Sites: only NIST-curve ECDSA node keys in OpenSSH form, one key per site, revocation."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from sqlmodel import Session

from fedvault.common.errors import AlreadyExists, ConfigError, NotFound
from fedvault.common.pki import generate_node_keys
from fedvault.server.identity import service
from fedvault.server.identity.tables import SiteStatus


def _openssh(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey,
) -> str:
    public = key.public_key()
    return public.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


def test_site_is_stored_with_a_clean_key_and_its_ssh_fingerprint(
    session: Session, node_key: str
) -> None:
    site = service.add_site(
        session, site_id="site-a", public_key=f"  {node_key}\n", created_by="x", description="A"
    )
    kind, blob, _comment = node_key.split()
    assert site.public_key == f"{kind} {blob}"  # comment dropped, one line
    expected = base64.b64encode(hashlib.sha256(base64.b64decode(blob)).digest()).decode()
    assert site.fingerprint == "SHA256:" + expected.rstrip("=")
    assert site.status == SiteStatus.REGISTERED and site.node_id is None
    assert service.get_site(session, "site-a").description == "A"


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()])
def test_every_nist_curve_is_accepted(session: Session, curve: ec.EllipticCurve) -> None:
    key = _openssh(ec.generate_private_key(curve))
    assert service.add_site(session, site_id="s", public_key=key, created_by="x").public_key == key


def test_rsa_key_is_refused_saying_what_flower_needs(session: Session) -> None:
    key = _openssh(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    with pytest.raises(ConfigError, match=r"ssh-rsa.*NIST curve"):
        service.add_site(session, site_id="s", public_key=key, created_by="x")
    assert service.list_sites(session) == []


def test_ed25519_key_is_refused(session: Session) -> None:
    key = _openssh(ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(ConfigError, match="NIST curve"):
        service.add_site(session, site_id="s", public_key=key, created_by="x")


@pytest.mark.parametrize(
    "bad_key",
    [
        "",
        "hello",
        "ecdsa-sha2-nistp384 AAAAnotbase64!!",
        "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQ=",
        "-----BEGIN PUBLIC KEY-----\nMHYwEAYHKoZIzj0CAQYFK4EEACIDYgAE\n-----END PUBLIC KEY-----",
        None,
    ],
)
def test_malformed_keys_are_refused(session: Session, bad_key: object) -> None:
    with pytest.raises(ConfigError, match="OpenSSH"):
        service.add_site(session, site_id="s", public_key=bad_key, created_by="x")


def test_two_keys_on_two_lines_are_refused(session: Session, node_key: str) -> None:
    other = generate_node_keys().public_openssh.decode()
    with pytest.raises(ConfigError, match="single OpenSSH line"):
        service.add_site(session, site_id="s", public_key=f"{node_key}\n{other}", created_by="x")


def test_duplicate_site_id_or_key_is_refused(session: Session, node_key: str) -> None:
    service.add_site(session, site_id="site-a", public_key=node_key, created_by="x")
    other = generate_node_keys().public_openssh.decode()
    with pytest.raises(AlreadyExists, match="site 'site-a'"):
        service.add_site(session, site_id="site-a", public_key=other, created_by="x")
    with pytest.raises(AlreadyExists, match="belongs to the site 'site-a'"):
        service.add_site(session, site_id="site-b", public_key=node_key, created_by="x")
    with pytest.raises(AlreadyExists, match="belongs to the site"):  # same key, other comment
        service.add_site(
            session, site_id="site-b", public_key=node_key.rsplit(" ", 1)[0] + " x", created_by="x"
        )
    assert [s.id for s in service.list_sites(session)] == ["site-a"]


def test_bad_site_id_is_refused(session: Session, node_key: str) -> None:
    with pytest.raises(ConfigError, match="not a valid site id"):
        service.add_site(session, site_id="Site A", public_key=node_key, created_by="x")


def test_node_id_is_stored(session: Session, node_key: str) -> None:
    service.add_site(session, site_id="site-a", public_key=node_key, created_by="x")
    for big in (2**62 + 5, 2**63, 2**64 - 1):  # Flower node ids are unsigned 64-bit
        assert service.set_site_node(session, site_id="site-a", node_id=big).node_id == big
        session.expire_all()  # read it back from the database
        assert service.get_site(session, "site-a").node_id == big
    with pytest.raises(ConfigError, match="whole number"):
        service.set_site_node(session, site_id="site-a", node_id="12")
    for wrong in (-1, 2**64):
        with pytest.raises(ConfigError, match="unsigned 64-bit"):
            service.set_site_node(session, site_id="site-a", node_id=wrong)
    with pytest.raises(NotFound):
        service.set_site_node(session, site_id="ghost", node_id=1)


def test_revoked_site_keeps_its_id_and_key(session: Session, node_key: str) -> None:
    service.add_site(session, site_id="site-a", public_key=node_key, created_by="x")
    site = service.revoke_site(session, site_id="site-a", by="admin")
    assert site.status == SiteStatus.REVOKED and site.revoked_at is not None
    again = service.revoke_site(session, site_id="site-a", by="admin")
    assert again.revoked_at == site.revoked_at
    assert [s.id for s in service.list_sites(session, status="revoked")] == ["site-a"]
    assert service.list_sites(session, status="registered") == []
    with pytest.raises(AlreadyExists, match="revoked"):
        service.add_site(session, site_id="site-a", public_key=node_key, created_by="x")
    with pytest.raises(ConfigError, match="not a site status"):
        service.list_sites(session, status="gone")
    with pytest.raises(NotFound):
        service.revoke_site(session, site_id="ghost", by="admin")
