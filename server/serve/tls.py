"""The server's TLS material: a private CA and a server certificate, made once by init."""

from __future__ import annotations

import ipaddress
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509

from fedvault.common.errors import ConfigError
from fedvault.common.files import atomic_writer, create_private
from fedvault.common.pki import DEFAULT_SERVER_NAMES, CertificateAuthority, issue_server_certificate
from fedvault.server.serve.control import ServerPaths

__all__ = ["ensure_server_tls", "server_names"]

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _normal(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def server_names(extra: Sequence[str]) -> list[str]:
    """localhost, 127.0.0.1 and ::1 plus ``extra`` names, each checked.

    Raises:
        ConfigError: a name is neither an IP address nor a DNS name.
    """
    for name in extra:
        if _is_ip(name):
            continue
        if len(name) > 253 or not _HOSTNAME.fullmatch(name):
            raise ConfigError(
                f"--hostname {name!r} is neither an IP address nor a DNS name "
                "(letters, digits, '-' and '.' only)."
            )
    return list(dict.fromkeys([*DEFAULT_SERVER_NAMES, *extra]))


def ensure_server_tls(paths: ServerPaths, names: Sequence[str]) -> tuple[bool, list[str]]:
    """Create the CA and server certificate in ``paths.tls_dir`` unless they exist.

    The CA key is not kept: nothing on disk can mint more certificates.

    Returns:
        (whether they were created now, ``names`` an existing certificate lacks).

    Raises:
        ConfigError: only part of the material exists.
    """
    if all(p.exists() for p in (paths.ca, paths.cert, paths.key)):
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        have = {str(v) for v in san.get_values_for_type(x509.DNSName)}
        have |= {str(v) for v in san.get_values_for_type(x509.IPAddress)}
        return False, [n for n in names if _normal(n) not in have]
    if paths.tls_dir.exists() and any(paths.tls_dir.iterdir()):
        raise ConfigError(
            f"{paths.tls_dir} holds only part of the TLS material (need ca.pem, server.pem and "
            "server.key). Move it away and run `fedvault server init` again."
        )
    ca = CertificateAuthority.create(common_name="fedvault server CA")
    cert_pem, key_pem = issue_server_certificate(ca, names=names)
    # Build the directory aside and rename it in: a crash leaves all of it or none.
    staging = Path(tempfile.mkdtemp(dir=paths.data_dir, prefix=".tls-"))
    try:
        create_private(staging / "server.key", key_pem, what="TLS server key")
        for name, pem in (("ca.pem", ca.certificate_pem()), ("server.pem", cert_pem)):
            with atomic_writer(staging / name, mode=0o644) as f:
                f.write(pem)
        if paths.tls_dir.exists():
            paths.tls_dir.rmdir()
        staging.rename(paths.tls_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return True, []
