"""Command lines for Flower's SuperLink and SuperNode, with fedvault's secure defaults."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

__all__ = ["config_args", "superlink_command", "supernode_command"]

ConfigValue = bool | int | float | str


def _toml(value: ConfigValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a double-quoted TOML string


def config_args(values: Mapping[str, ConfigValue]) -> str:
    """``{"a": 1, "b": "x"}`` -> ``a=1 b="x"``, as ``--run-config``/``--node-config`` take."""
    return " ".join(f"{key}={_toml(value)}" for key, value in values.items())


def superlink_command(
    *, ca: Path, cert: Path, key: Path, host: str, port: int, database: Path
) -> list[str]:
    """A SuperLink with TLS and node authentication, no runtime installs, state on disk.

    Flower serves the Fleet, Control and Runtime APIs on this one port; the Control API
    has no authentication of its own, so bind it to loopback unless a proxy passes only
    ``/v1/fleet/*`` to sites.
    """
    return [
        "flower-superlink",
        "--ssl-ca-certfile",
        str(ca),
        "--ssl-certfile",
        str(cert),
        "--ssl-keyfile",
        str(key),
        "--enable-supernode-auth",
        "--disable-runtime-dependency-installation",
        "--database",
        str(database),
        "--host",
        host,
        "--port",
        str(port),
    ]


def supernode_command(
    *,
    superlink: str,
    ca: Path,
    private_key: Path,
    port: int,
    node_config: Mapping[str, ConfigValue],
) -> list[str]:
    """A SuperNode that trusts ``ca`` and authenticates with ``private_key``."""
    command = [
        "flower-supernode",
        "--superlink",
        superlink,
        "--root-certificates",
        str(ca),
        "--auth-supernode-private-key",
        str(private_key),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if node_config:
        command += ["--node-config", config_args(node_config)]
    return command
