"""`fedvault server init/start` checks, the fleet gateway's filter and the supervisor's budget."""

from __future__ import annotations

import asyncio
import re
import socket
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from sqlmodel import Session
from typer.testing import CliRunner

from fedvault.common.cli import build_app, main
from fedvault.common.errors import ConfigError, ProcessError
from fedvault.common.processes import ManagedProcess, free_port
from fedvault.server.core.db import open_database
from fedvault.server.core.settings import ServerSettings
from fedvault.server.identity import authenticate, load_pepper
from fedvault.server.serve.gateway import FleetGateway
from fedvault.server.serve.supervisor import ChildSpec, Supervisor, launch

runner = CliRunner()
TOKEN = re.compile(r"fvt_[0-9A-Za-z]+")
PROTOBUF = "application/protobuf"


def _init(data_dir: Path, *extra: str) -> str:
    result = runner.invoke(
        build_app(), ["server", "init", "--data-dir", str(data_dir), *extra], terminal_width=200
    )
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def _fails(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run `fedvault ARGS` as a user would; it must fail with one message, exit 1."""
    monkeypatch.setattr(sys, "argv", ["fedvault", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out, err = capsys.readouterr()
    assert exit_info.value.code == 1, out + err
    assert "Traceback" not in out + err
    return " ".join(err.split())  # rich wraps long lines


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- fedvault server init ---------------------------------------------------------------------
def test_init_creates_private_keys_and_a_working_admin_token(tmp_path, db_url):
    data = tmp_path / "data"
    output = _init(data, "--database-url", db_url, "--admin", "root", "--hostname", "fl.example")

    assert _mode(data) == 0o700
    assert _mode(data / "tls") == 0o700
    for secret in ("tls/server.key", "token-pepper.key", "keyring.json", "audit-signing.key"):
        assert _mode(data / secret) == 0o600, secret
    assert (data / "tls" / "ca.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE")
    cert = x509.load_pem_x509_certificate((data / "tls" / "server.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "fl.example"} <= set(names.get_values_for_type(x509.DNSName))
    tokens = TOKEN.findall(output)
    assert len(tokens) == 1
    settings = ServerSettings(data_dir=data, database_url=db_url)
    engine = open_database(db_url)
    try:
        with Session(engine) as session:
            principal = authenticate(session, token=tokens[0], pepper=load_pepper(settings))
    finally:
        engine.dispose()
    assert (principal.id, principal.role) == ("root", "admin")


def test_second_init_prints_no_token_and_changes_no_key(tmp_path, db_url):
    data = tmp_path / "data"
    _init(data, "--database-url", db_url)
    keys = ["tls/ca.pem", "tls/server.pem", "tls/server.key", "token-pepper.key", "keyring.json"]
    before = {name: (data / name).read_bytes() for name in keys}

    again = _init(data, "--database-url", db_url, "--hostname", "new.example")

    assert not TOKEN.search(again)
    assert "no admin token" in again
    assert "does not name new.example" in again  # told, not silently re-issued
    assert {name: (data / name).read_bytes() for name in keys} == before


def test_init_remembers_the_database_for_later_commands(tmp_path, db_url, monkeypatch, capsys):
    """`server start`, the ServerApps and the CLI find the database init was given."""
    data = tmp_path / "data"
    _init(data, "--database-url", db_url)
    assert _mode(data / "settings.toml") == 0o600  # the URL may hold a password
    assert ServerSettings(data_dir=data).resolved_database_url() == db_url
    assert not (data / "fedvault.db").exists()

    other = "sqlite:///" + str(tmp_path / "other.db")
    message = _fails(monkeypatch, capsys, "server", "init", "--data-dir", str(data),
                     "--database-url", other)  # fmt: skip
    assert "initialised with another database" in message
    assert ServerSettings(data_dir=data).resolved_database_url() == db_url


def test_a_damaged_settings_file_is_a_clear_error(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "settings.toml").write_text("database-url = [1]\n")
    with pytest.raises(ConfigError, match="only text values"):
        ServerSettings(data_dir=data).resolved_database_url()
    (data / "settings.toml").write_text("database-url = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        ServerSettings(data_dir=data).resolved_database_url()


def test_init_refuses_a_data_dir_that_is_a_file(tmp_path, monkeypatch, capsys):
    target = tmp_path / "data"
    target.write_text("not a directory")
    message = _fails(monkeypatch, capsys, "server", "init", "--data-dir", str(target))
    assert "is not a directory" in message
    assert target.read_text() == "not a directory"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("nonsense", "not a database URL"),
        ("mysqlx://user@localhost/db", "not a database URL"),
        ("postgresql+psycopg://nobody@127.0.0.1:1/none", "Cannot open the database"),
    ],
)
def test_init_refuses_a_bad_database_url(tmp_path, monkeypatch, capsys, url, expected):
    data = tmp_path / "data"
    args = ["server", "init", "--data-dir", str(data), "--database-url", url]
    assert expected in _fails(monkeypatch, capsys, *args)
    assert not (data / "tls").exists()  # nothing half-made to trust later


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--admin", "Bad Name", "not a valid user id"),
        ("--hostname", "bad host/name", "neither an IP address nor a DNS name"),
    ],
)
def test_init_refuses_bad_names_before_creating_anything(
    tmp_path, monkeypatch, capsys, option, value, expected
):
    data = tmp_path / "data"
    message = _fails(monkeypatch, capsys, "server", "init", "--data-dir", str(data), option, value)
    assert expected in message
    assert not data.exists()


# -- fedvault server start: refused before any process starts -------------------------------
def test_start_refuses_an_uninitialised_data_dir(tmp_path, monkeypatch, capsys):
    message = _fails(monkeypatch, capsys, "server", "start", "--data-dir", str(tmp_path))
    assert "fedvault server init" in message


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("server") / "data"
    _init(data)
    return data


def test_start_refuses_plain_http_outside_test_mode(data_dir, monkeypatch, capsys):
    monkeypatch.setenv("FEDVAULT_MODE", "production")
    args = ["server", "start", "--data-dir", str(data_dir), "--insecure-http"]
    assert "only with FEDVAULT_MODE=test" in _fails(monkeypatch, capsys, *args)


def test_start_refuses_a_port_in_use(data_dir, monkeypatch, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = ["server", "start", "--data-dir", str(data_dir), "--api-port", str(port)]
        args += ["--fleet-port", str(free_port()), "--superlink-port", str(free_port())]
        message = _fails(monkeypatch, capsys, *args)
    assert f"127.0.0.1:{port}" in message
    assert "--api-port" in message


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--api-port", "0"], "api_port"),
        (["--fleet-port", "9500", "--superlink-port", "9500"], "must differ"),
    ],
)
def test_start_refuses_bad_ports(data_dir, monkeypatch, capsys, args, expected):
    message = _fails(monkeypatch, capsys, "server", "start", "--data-dir", str(data_dir), *args)
    assert expected in message


def test_start_refuses_a_readable_pepper(data_dir, monkeypatch, capsys):
    pepper = data_dir / "token-pepper.key"
    pepper.chmod(0o644)
    try:
        message = _fails(monkeypatch, capsys, "server", "start", "--data-dir", str(data_dir))
    finally:
        pepper.chmod(0o600)
    assert "chmod 600" in message


# -- the fleet gateway ------------------------------------------------------------------------
class _Streamed(httpx.AsyncByteStream):
    """A response body that arrives as a stream, as from the network."""

    def __init__(self, data: bytes):
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data


def _through_gateway(
    method: str,
    path: str,
    *,
    content: bytes | AsyncIterator[bytes] = b"",
    headers: dict[str, str] | None = None,
    upstream: httpx.MockTransport | None = None,
) -> tuple[httpx.Response, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def superlink(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            stream=_Streamed(b"reply:" + request.content[:16]),
            headers={"content-type": PROTOBUF, "server": "uvicorn", "x-flwr-version": "1.41"},
        )

    gateway = FleetGateway(
        "https://127.0.0.1:9093", transport=upstream or httpx.MockTransport(superlink)
    )

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=gateway)
        async with httpx.AsyncClient(transport=transport, base_url="https://gw") as client:
            return await client.request(method, path, content=content, headers=headers)

    return asyncio.run(call()), seen


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/control/list-runs"),  # the unauthenticated Control API
        ("POST", "/v1/control/register-node"),
        ("POST", "/v1/runtime/pull-messages"),
        ("GET", "/health"),
        ("GET", "/v1/fleet/pull-messages"),  # right path, wrong method
        ("POST", "/v1/fleet/"),
        ("POST", "/v1/fleet/pull-messages/../../control/stop-run"),
        ("POST", "/v1/fleet/Pull_Messages"),
        ("POST", "/v1/fleetish/pull-messages"),
    ],
)
def test_gateway_answers_404_and_never_reaches_the_superlink(method, path):
    response, seen = _through_gateway(method, path, content=b"x" if method == "POST" else b"")
    assert response.status_code == 404
    assert "only the Fleet API" in response.text
    assert seen == []


def test_gateway_forwards_fleet_calls_with_node_auth_headers():
    body = b"\x0a\x04node-protobuf-bytes"
    headers = {
        "content-type": PROTOBUF,
        "flwr-public-key": "cHVibGlj",
        "flwr-signature": "c2ln",
        "flwr-timestamp": "2026-01-01T00:00:00+00:00",
        "proxy-authorization": "Basic c2VjcmV0",  # meant for a hop, not the SuperLink
    }
    response, seen = _through_gateway(
        "POST", "/v1/fleet/pull-messages", content=body, headers=headers
    )

    assert response.status_code == 200
    assert response.content == b"reply:" + body[:16]
    assert response.headers["x-flwr-version"] == "1.41"
    assert "uvicorn" not in response.headers.get("server", "")
    (forwarded,) = seen
    assert str(forwarded.url) == "https://127.0.0.1:9093/v1/fleet/pull-messages"
    assert forwarded.content == body
    for name in ("flwr-public-key", "flwr-signature", "flwr-timestamp", "content-type"):
        assert forwarded.headers[name] == headers[name]
    assert forwarded.headers["host"] == "127.0.0.1:9093"
    assert "proxy-authorization" not in forwarded.headers


def test_gateway_streams_a_large_push_intact():
    chunk = bytes(range(256)) * 4096  # 1 MiB

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(12):
            yield chunk

    response, seen = _through_gateway(
        "POST", "/v1/fleet/push-object", content=chunks(), headers={"content-type": PROTOBUF}
    )
    assert response.status_code == 200
    assert seen[0].content == chunk * 12


def test_gateway_answers_502_when_the_superlink_is_down():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    response, _ = _through_gateway(
        "POST", "/v1/fleet/send-node-heartbeat", content=b"x", upstream=httpx.MockTransport(refuse)
    )
    assert response.status_code == 502
    assert "not reachable" in response.text


# -- the supervisor ---------------------------------------------------------------------------
def _python_child(name: str, code: str, tmp_path: Path, started: list[ManagedProcess]) -> ChildSpec:
    def start() -> ManagedProcess:
        process = launch(
            lambda: ManagedProcess(
                name, [sys.executable, "-c", code], env={}, log_path=tmp_path / f"{name}.log"
            ),
            lambda process: None,
        )
        started.append(process)
        return process

    return ChildSpec(name, start)


def test_supervisor_restarts_a_crashing_child_then_stops_everything(tmp_path):
    started: list[ManagedProcess] = []
    steady = _python_child("steady", "import time; time.sleep(60)", tmp_path, started)
    crash = "import sys; print('disk on fire'); sys.exit(3)"
    flaky = _python_child("flaky", crash, tmp_path, started)
    lines: list[str] = []
    supervisor = Supervisor(
        [steady, flaky], max_restarts=2, window=60, report=lines.append, poll=0.05
    )

    with pytest.raises(ProcessError) as error:
        supervisor.run()

    message = str(error.value)
    assert "flaky exited with status 3 after 2 restarts" in message
    assert "disk on fire" in message  # the end of its log says why
    assert sum("flaky exited with status 3; restarting" in line for line in lines) == 2
    assert len(started) == 4  # steady once, flaky three times
    assert not any(process.alive() for process in started)  # all stopped and reaped


def test_supervisor_refuses_a_negative_budget():
    with pytest.raises(ValueError, match="max_restarts"):
        Supervisor([], max_restarts=-1)
