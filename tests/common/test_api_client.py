"""The admin API client: bodies from the shell, tokens never in clear, errors a user can act on."""

from __future__ import annotations

import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from fedvault.common import api_cli
from fedvault.common.api_cli import parse_body
from fedvault.common.api_client import TOKEN_ENV, ApiClient, ApiError, read_token
from fedvault.common.cli import build_app
from fedvault.common.errors import ConfigError
from fedvault.common.pki import CertificateAuthority, issue_server_certificate

runner = CliRunner()


def test_fields_keep_json_values_and_raw_fields_stay_text() -> None:
    body = parse_body(
        fields=["rounds=5", "name=tumour-board", "dp=true", "tags=[1]"],
        raw_fields=["id=123", "note=true"],
        data=None,
    )
    assert body == {
        "rounds": 5,
        "name": "tumour-board",
        "dp": True,
        "tags": [1],
        "id": "123",
        "note": "true",
    }
    assert parse_body(fields=[], data=None) is None


def test_data_is_json_text_or_a_file(tmp_path: Path) -> None:
    (tmp_path / "b.json").write_text('{"id": "oncology"}')
    assert parse_body(fields=[], data='{"a": 1}') == {"a": 1}
    assert parse_body(fields=[], data=f"@{tmp_path / 'b.json'}") == {"id": "oncology"}


@pytest.mark.parametrize(
    ("fields", "data", "message"),
    [
        (["a=1"], "{}", "not both"),
        (["rounds"], None, "KEY=VALUE"),
        (["=5"], None, "KEY=VALUE"),
        ([], "{not json", "not valid JSON"),
        ([], "@/no/such/body.json", "Cannot read"),
    ],
)
def test_a_bad_body_is_refused_before_any_request(
    fields: list[str], data: str | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_body(fields=fields, data=data)


def test_the_token_comes_from_the_environment_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, " fvt_from_env \n")
    assert read_token() == "fvt_from_env"
    token_file = tmp_path / "token"
    token_file.write_text("fvt_from_file\n")
    token_file.chmod(0o600)
    assert read_token(token_file) == "fvt_from_file"
    monkeypatch.delenv(TOKEN_ENV)
    with pytest.raises(ConfigError, match=TOKEN_ENV):
        read_token()
    with pytest.raises(ConfigError, match="Cannot read the token file"):
        read_token(tmp_path / "missing")


@pytest.mark.parametrize("url", ["http://api.example.org:8443", "http://10.0.0.5:8443"])
def test_a_token_is_never_sent_in_clear_off_this_machine(url: str) -> None:
    with pytest.raises(ConfigError, match="in clear"):
        ApiClient(url=url, token="fvt_x")


@pytest.mark.parametrize("url", ["ftp://127.0.0.1", "https://", "not a url"])
def test_a_bad_url_is_named(url: str) -> None:
    with pytest.raises(ConfigError, match="Invalid API URL"):
        ApiClient(url=url, token="fvt_x")


def _mock(handler) -> ApiClient:  # type: ignore[no-untyped-def]
    transport = httpx.MockTransport(handler)
    client = httpx.Client(base_url="https://api.test", transport=transport)
    return ApiClient(url="https://api.test", token="fvt_secret", client=client)


def test_the_token_travels_as_a_bearer_header_only() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "dana"})

    assert _mock(handler).call("GET", "/v1/me") == {"id": "dana"}
    assert seen[0].headers["authorization"] == "Bearer fvt_secret"
    assert "fvt_secret" not in str(seen[0].url)


def test_an_error_answer_reads_as_one_line_with_the_request_id() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        error = {
            "code": "policy_denied",
            "message": "Access denied: dana may not x.",
            "request_id": "r-7",
        }
        return httpx.Response(403, json={"error": error})

    with pytest.raises(ApiError) as caught:
        _mock(handler).call("GET", "/v1/models")
    assert str(caught.value) == "403 policy_denied: Access denied: dana may not x. (request id r-7)"
    assert (caught.value.status, caught.value.code) == (403, "policy_denied")


def test_a_refused_token_says_where_the_token_comes_from() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": {"code": "unauthenticated", "message": "no"}})

    with pytest.raises(ApiError, match=TOKEN_ENV):
        _mock(handler).call("GET", "/v1/me")


def test_an_answer_that_is_not_the_apis_still_reads_clearly() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>Bad Gateway</html>")

    with pytest.raises(ApiError, match="502 Bad Gateway"):
        _mock(handler).call("GET", "/v1/me")


def test_a_relative_path_is_refused() -> None:
    with pytest.raises(ConfigError, match="/v1/projects"):
        _mock(lambda r: httpx.Response(200)).call("GET", "v1/projects")


def test_nobody_listening_is_explained(unused_port: int) -> None:
    client = ApiClient(url=f"http://127.0.0.1:{unused_port}", token="fvt_x", timeout=5)
    with pytest.raises(ApiError, match=r"Cannot reach the admin API.*fedvault server start"):
        client.call("GET", "/v1/me")


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTPS server on 127.0.0.1 with a certificate from a fresh CA: (url, CA file)."""
    ca = CertificateAuthority.create()
    cert, key = issue_server_certificate(ca)
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    (tmp_path / "ca.pem").write_bytes(ca.certificate_pem())

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"auth": self.headers.get("authorization")}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", tmp_path / "ca.pem"
    finally:
        server.shutdown()
        server.server_close()


def test_an_untrusted_certificate_points_to_the_ca(https_server: tuple[str, Path]) -> None:
    url, ca = https_server
    with pytest.raises(ApiError, match=r"does not trust.*--ca"):
        ApiClient(url=url, token="fvt_x", timeout=5).call("GET", "/v1/me")
    trusted = ApiClient(url=url, token="fvt_x", ca=ca, timeout=5)
    assert trusted.call("GET", "/v1/me") == {"auth": "Bearer fvt_x"}


def test_the_command_talks_over_tls_and_prints_plain_json_to_a_pipe(
    https_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, ca = https_server
    monkeypatch.setenv(TOKEN_ENV, "fvt_cli")
    result = runner.invoke(build_app(), ["api", "GET", "/v1/me", "--url", url, "--ca", str(ca)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"auth": "Bearer fvt_cli"}


def test_a_download_cut_off_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield b"x" * 1000
            raise httpx.ReadError("connection reset")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"content-type": "application/octet-stream"}, stream=Broken()
        )

    monkeypatch.setattr(api_cli, "open_client", lambda **_: _mock(handler))
    target = tmp_path / "model.safetensors"
    result = runner.invoke(
        build_app(), ["api", "GET", "/v1/models/m/versions/1/download", "-o", str(target)]
    )
    assert result.exit_code == 1
    assert isinstance(result.exception, ApiError) and "cut off" in str(result.exception)
    assert list(tmp_path.iterdir()) == [], "no partial model, no temporary file"


def test_a_binary_answer_is_not_dumped_on_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"content-type": "application/octet-stream"}, content=b"\0\1"
        )

    monkeypatch.setattr(api_cli, "open_client", lambda **_: _mock(handler))
    result = runner.invoke(build_app(), ["api", "GET", "/v1/models/m/versions/1/download"])
    assert result.exit_code == 1
    assert "--output" in str(result.exception)


def test_the_method_is_checked_and_help_explains_the_arguments() -> None:
    bad = runner.invoke(build_app(), ["api", "FETCH", "/v1/me"])
    assert bad.exit_code == 2 and "GET, POST" in bad.output
    shown = runner.invoke(build_app(), ["api", "--help"], terminal_width=200)
    assert "The API path with any query" in shown.output and "FEDVAULT_API_URL" in shown.output


def test_an_error_that_echoes_brackets_prints_as_text(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Error messages echo user input; rich must not read it as markup (or crash on it)."""
    from fedvault.common.cli import main

    def handler(request: httpx.Request) -> httpx.Response:
        error = {"code": "invalid", "message": "Invalid since '[/x] [bold]'.", "request_id": "r"}
        return httpx.Response(422, json={"error": error})

    monkeypatch.setattr(api_cli, "open_client", lambda **_: _mock(handler))
    monkeypatch.setattr("sys.argv", ["fedvault", "api", "GET", "/v1/audit/events?since=[/x]"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert "Invalid since '[/x] [bold]'" in err and "Traceback" not in err


def test_a_json_answer_that_does_not_parse_is_an_error_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "application/json"}, content=b"{oops")

    monkeypatch.setattr(api_cli, "open_client", lambda **_: _mock(handler))
    result = runner.invoke(build_app(), ["api", "GET", "/v1/me"])
    assert isinstance(result.exception, ApiError) and "not valid JSON" in str(result.exception)
