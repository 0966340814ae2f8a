"""PKI: a CA-signed server certificate for local names; node keys load as Flower expects."""

from __future__ import annotations

import ipaddress
import stat

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

from fedvault.common.pki import CertificateAuthority, generate_node_keys, issue_server_certificate


def test_server_certificate_is_signed_by_ca_with_local_sans():
    ca = CertificateAuthority.create()
    cert_pem, _key = issue_server_certificate(ca)
    cert = x509.load_pem_x509_certificate(cert_pem)
    cert.verify_directly_issued_by(ca.certificate)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    ips = san.get_values_for_type(x509.IPAddress)
    assert ipaddress.ip_address("127.0.0.1") in ips and ipaddress.ip_address("::1") in ips


def test_certificate_from_another_ca_does_not_verify():
    cert_pem, _ = issue_server_certificate(CertificateAuthority.create())
    other = CertificateAuthority.create()
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        cert.verify_directly_issued_by(other.certificate)
    except Exception:
        return
    raise AssertionError("a certificate verified against the wrong CA")


def test_node_keys_are_nist_ec_in_openssh_format_and_private_file_is_0600(tmp_path):
    keys = generate_node_keys()
    pub_path = keys.save(tmp_path / "node.key")
    private = load_ssh_private_key((tmp_path / "node.key").read_bytes(), password=None)
    public = load_ssh_public_key(pub_path.read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert isinstance(private.curve, ec.SECP384R1)
    assert public.public_numbers() == private.public_key().public_numbers()
    assert stat.S_IMODE((tmp_path / "node.key").stat().st_mode) == 0o600
