"""`fedvault server start` for real: API over HTTPS, sites through the gateway, restarts, stop."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fedvault.common.flower_cmd import supernode_command
from fedvault.common.pki import generate_node_keys
from fedvault.common.processes import ManagedProcess, descendants, flower_env, free_port
from tests.e2e._server import Server, running_server, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("server")) as srv:
        yield srv


def _listening(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port`` (from /proc/net/tcp*)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def test_admin_api_answers_over_https_trusting_the_servers_ca(server):
    response = httpx.get(f"{server.api}/v1/health", verify=server.tls())
    assert response.status_code == 200
    me = httpx.get(
        f"{server.api}/v1/me",
        headers={"Authorization": f"Bearer {server.token}"},
        verify=server.tls(),
    )
    assert me.status_code == 200, me.text
    with pytest.raises(httpx.ConnectError):  # an unknown CA is refused
        httpx.get(f"{server.api}/v1/health")


def test_superlink_listens_on_loopback_only(server):
    assert _listening(server.superlink_port) == {"0100007F"}  # 127.0.0.1, nothing else
    assert _listening(server.fleet_port) == {"00000000"}  # the gateway: 0.0.0.0


def test_gateway_refuses_the_control_api(server):
    url = f"https://127.0.0.1:{server.fleet_port}"
    ca = server.tls()
    refused = httpx.post(f"{url}/v1/control/list-nodes", content=b"", verify=ca)
    assert refused.status_code == 404
    assert httpx.get(f"{url}/health", verify=ca).status_code == 404


def test_a_registered_site_joins_through_the_gateway(server, tmp_path):
    keys = generate_node_keys("site-e2e")
    public = keys.save(tmp_path / "node.key")
    node_id = server.control().register_node(public.read_bytes(), name="site-e2e")
    node = ManagedProcess(
        "SuperNode site-e2e",
        supernode_command(
            superlink=f"127.0.0.1:{server.fleet_port}",
            ca=server.paths.ca,
            private_key=tmp_path / "node.key",
            port=free_port(),
            node_config={},
        ),
        env=flower_env(tmp_path / "flwr-home"),
        log_path=tmp_path / "supernode.log",
    )
    try:

        def online() -> bool:
            node.check_alive()
            return any(
                n.node_id == node_id and n.status == "online" for n in server.control().nodes()
            )

        wait_for(online, timeout=90, what="the site did not come online", server=server)
    finally:
        node.stop()


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"  # a zombie has exited


def _superlink_pid(server: Server) -> int:
    for pid in descendants(server.process.pid):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if any(arg.endswith(b"flower-superlink") for arg in cmdline[:2]):
            return pid
    raise AssertionError(f"no SuperLink among the server's processes:\n{server.log()}")


def test_a_killed_superlink_is_restarted_and_reported(server):
    killed = _superlink_pid(server)
    os.kill(killed, signal.SIGKILL)

    wait_for(
        lambda: "SuperLink exited with status -9; restarting" in server.log(),
        timeout=30,
        what="the crash was not reported",
        server=server,
    )

    def serving_again() -> bool:
        try:
            return _superlink_pid(server) != killed and server.control().nodes() is not None
        except Exception:
            return False

    wait_for(serving_again, timeout=90, what="the SuperLink did not come back", server=server)
    assert "site-e2e" in {n.name for n in server.control().nodes()}  # state kept on disk
    assert server.process.alive()


def test_sigterm_stops_every_process(server):
    children = descendants(server.process.pid)
    assert children
    server.process.popen.send_signal(signal.SIGTERM)

    assert server.process.wait(timeout=60) == 0, server.log()
    assert "fedvault server stopped" in server.log()
    assert not [p for p in children if _alive(p)]
    assert not _listening(server.superlink_port)
    assert not _listening(server.fleet_port)
