"""The fleet gateway: sites reach the SuperLink's Fleet API here, and nothing else of it."""

from __future__ import annotations

import argparse
import logging
import re
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import httpx

__all__ = ["FleetGateway", "gateway_command", "main"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Flower's Fleet routes are POST /v1/fleet/<kebab-case-name>; anything else (the Control
# and Runtime APIs, /health, odd spellings like "..", "//" or %-escapes) is not a route here.
FLEET_PATH = re.compile(r"/v1/fleet/[a-z][a-z0-9-]{0,63}")
# Connection-level headers a proxy must not pass on (RFC 9110 section 7.6.1).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)


# Set by the server that answers the site (this one), not copied from the SuperLink's answer.
OWN_RESPONSE_HEADERS = frozenset({"date", "server"})


def _forwardable(
    headers: Sequence[tuple[bytes, bytes]], drop: frozenset[str] = frozenset()
) -> list[tuple[bytes, bytes]]:
    return [
        (k, v)
        for k, v in headers
        if (name := k.decode("latin-1").lower()) not in HOP_BY_HOP and name not in drop
    ]


async def _answer(send: Send, status: int, text: str) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class FleetGateway:
    """ASGI app passing ``POST /v1/fleet/*`` to the SuperLink, streaming both bodies.

    Every other request is answered 404 here and never reaches the SuperLink, so its
    unauthenticated Control API stays on loopback. Node authentication stays the
    SuperLink's: the signed headers SuperNodes send are passed on untouched.

    Args:
        upstream: ``https://127.0.0.1:PORT`` of the SuperLink.
        ca: the CA certificate that signed the SuperLink's certificate.
        transport: an httpx transport to use instead of the network (tests).
    """

    def __init__(
        self,
        upstream: str,
        *,
        ca: Path | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.upstream = upstream.rstrip("/")
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(ca)) if ca is not None else True
        )
        self.client = httpx.AsyncClient(
            verify=verify,
            transport=transport,
            timeout=httpx.Timeout(connect=10.0, read=300.0, write=300.0, pool=30.0),
            follow_redirects=False,
        )
        self.client.headers.clear()  # pass the site's headers on as they are, add none

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # websockets: not a fleet route; closing the scope refuses it
        if scope["method"] != "POST" or not FLEET_PATH.fullmatch(scope.get("path", "")):
            await _answer(send, 404, "Not found: this port serves only the Fleet API.\n")
            return
        await self._forward(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def body() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                if chunk:
                    yield chunk
                if not message.get("more_body", False):
                    return

        request = self.client.build_request(
            "POST",
            self.upstream + scope["path"],
            headers=_forwardable(scope["headers"]),
            content=body(),
        )
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError as e:
            log.warning("Fleet request %s not forwarded: %s", scope["path"], e)
            await _answer(send, 502, "The SuperLink is not reachable; try again shortly.\n")
            return
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": _forwardable(response.headers.raw, OWN_RESPONSE_HEADERS),
                }
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()


def gateway_command(
    *, host: str, port: int, upstream_port: int, ca: Path, cert: Path, key: Path
) -> list[str]:
    """The command line that runs the gateway in its own process (see `main`)."""
    return [
        sys.executable,
        "-m",
        "fedvault.server.serve.gateway",
        "--host",
        host,
        "--port",
        str(port),
        "--upstream-port",
        str(upstream_port),
        "--ca",
        str(ca),
        "--cert",
        str(cert),
        "--key",
        str(key),
    ]


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the gateway over TLS with uvicorn until SIGTERM."""
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m fedvault.server.serve.gateway")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--ca", type=Path, required=True)
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    args = parser.parse_args(argv)
    app = FleetGateway(f"https://127.0.0.1:{args.upstream_port}", ca=args.ca)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        ssl_certfile=str(args.cert),
        ssl_keyfile=str(args.key),
        server_header=False,
        proxy_headers=False,
        log_level="info",
    )


if __name__ == "__main__":
    main()
