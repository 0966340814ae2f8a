"""A client for the admin API: authenticated requests, readable errors, streamed bodies."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import ssl
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from fedvault.common.errors import ApiError, ConfigError

__all__ = [
    "CA_ENV",
    "DEFAULT_URL",
    "TOKEN_ENV",
    "URL_ENV",
    "ApiClient",
    "ApiError",
    "default_ca",
    "parse_json",
    "read_token",
]

log = logging.getLogger("fedvault.api_client")

TOKEN_ENV = "FEDVAULT_TOKEN"  # noqa: S105 -- the variable's name, not a token
URL_ENV = "FEDVAULT_API_URL"
CA_ENV = "FEDVAULT_CA"
DEFAULT_URL = "https://127.0.0.1:8443"


def default_ca() -> Path:
    """Where `fedvault server init` writes the CA: tls/ca.pem in the server's data directory
    (``FEDVAULT_DATA_DIR``, default ./fedvault-data). The names are the server settings',
    repeated here because a client machine may not have the admin plane installed."""
    return Path(os.environ.get("FEDVAULT_DATA_DIR") or "fedvault-data") / "tls" / "ca.pem"


_LOOPBACK = frozenset({"localhost"})


def read_token(token_file: Path | None = None) -> str:
    """The caller's API token: from ``token_file``, else from ``FEDVAULT_TOKEN``.

    A token is never taken as a command-line value, where other users and the shell
    history would see it.

    Raises:
        ConfigError: no token, or the file cannot be read.
    """
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"Cannot read the token file {token_file}: {e.strerror}.") from e
        if token_file.stat().st_mode & 0o077:
            log.warning("%s can be read by other users; chmod 600 it.", token_file)
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ConfigError(
            f"No API token: set {TOKEN_ENV} or pass --token-file FILE. An admin issues "
            "tokens (POST /v1/users/{id}/tokens); each is shown once."
        )
    return token


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _verify(ca: Path | None) -> ssl.SSLContext | bool:
    if ca is None:
        return True  # the system's trust store
    try:
        return ssl.create_default_context(cafile=str(ca))
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"Cannot use {ca} as the CA certificate: {e}.") from e


class ApiClient:
    """Requests to one admin API as one caller.

    Args:
        url: the API's base URL. ``http://`` is accepted only for a loopback address (the
            server's test mode): anything else would send the token in clear.
        token: the caller's API token.
        ca: the CA that signed the server's certificate; None: the system's trust store.
        timeout: seconds to wait for the server to connect or send something.
        client: an httpx client to send through instead (tests).

    Raises:
        ConfigError: a bad URL or CA file.
    """

    def __init__(
        self,
        *,
        url: str,
        token: str,
        ca: Path | None = None,
        timeout: float = 60.0,
        client: httpx.Client | None = None,
    ):
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as e:
            raise ConfigError(f"Invalid API URL {url!r}: {e}.") from e
        if parsed.scheme not in ("https", "http") or not parsed.host:
            raise ConfigError(f"Invalid API URL {url!r}: write it as https://HOST:PORT.")
        if parsed.scheme == "http" and not _is_loopback(parsed.host):
            raise ConfigError(
                f"Refusing to send an API token in clear to {url}: use https://. Plain "
                "http:// is only for a test server on this machine."
            )
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._http = client or httpx.Client(base_url=self.url, verify=_verify(ca), timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def stream(
        self, method: str, path: str, *, body: Any = None, params: Mapping[str, str] | None = None
    ) -> Iterator[httpx.Response]:
        """Send one request and yield its successful response, body not yet read.

        Raises:
            ApiError: the server answered 4xx/5xx (its message and request id included),
                or could not be reached, or did not answer in time.
            ConfigError: ``path`` is not an absolute API path.
        """
        if not path.startswith("/"):
            raise ConfigError(f"Give the API path from its root, e.g. /v1/projects, not {path!r}.")
        request = self._http.build_request(
            method.upper(), path, json=body, params=params, headers=self._headers
        )
        try:
            response = self._http.send(request, stream=True)
        except httpx.TimeoutException as e:
            raise ApiError(f"The admin API at {self.url} did not answer in time ({e}).") from e
        except httpx.TransportError as e:
            raise ApiError(self._unreachable(e)) from e
        try:
            if response.status_code >= 400:
                response.read()
                raise _error(response)
            yield response
        except httpx.TransportError as e:
            raise ApiError(
                f"The answer to {method.upper()} {path} was cut off ({e}); nothing of it was "
                "kept. Try again."
            ) from e
        finally:
            response.close()

    def call(self, method: str, path: str, *, body: Any = None) -> Any:
        """Send one request and return its JSON answer (None for an empty one).

        Raises:
            ApiError: as ``stream``, or the answer is not JSON.
        """
        with self.stream(method, path, body=body) as response:
            return parse_json(response.read(), what=f"{method.upper()} {path}")

    def _unreachable(self, error: httpx.TransportError) -> str:
        cause = error.__cause__ or error.__context__
        while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None or "CERTIFICATE_VERIFY_FAILED" in str(error):
            return (
                f"The admin API at {self.url} presented a certificate this machine does not "
                f"trust. Pass the federation's CA with --ca (or {CA_ENV}); the server keeps "
                "it in its data directory as tls/ca.pem."
            )
        return (
            f"Cannot reach the admin API at {self.url} ({error}). Check the address (--url "
            f"or {URL_ENV}) and that `fedvault server start` is running there."
        )


def parse_json(content: bytes, *, what: str) -> Any:
    """An answer's JSON body (None when empty).

    Raises:
        ApiError: the body is not JSON.
    """
    if not content:
        return None
    try:
        return json.loads(content)
    except ValueError as e:
        raise ApiError(f"The answer to {what} is not valid JSON ({e}).") from e


def _error(response: httpx.Response) -> ApiError:
    """The API's error answer as one readable line, with what to do where it helps."""
    status = response.status_code
    code = message = request_id = None
    try:  # {"error": {"code", "message", "request_id"}}; a 422's message lists its fields
        error = response.json()["error"]
        code, message, request_id = error.get("code"), error.get("message"), error.get("request_id")
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    text = f"{status} {code or response.reason_phrase}: {message or response.text[:200]}"
    if status == 401:
        text += f" Check the token ({TOKEN_ENV} or --token-file)."
    if request_id:
        text += f" (request id {request_id})"
    return ApiError(text, status=status, code=code)
