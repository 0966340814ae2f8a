"""`fedvault api`: call the admin API from a shell, with the caller's token and the server's CA."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from fedvault.common.api_client import (
    CA_ENV,
    DEFAULT_URL,
    TOKEN_ENV,
    URL_ENV,
    ApiClient,
    default_ca,
    parse_json,
    read_token,
)
from fedvault.common.errors import ConfigError
from fedvault.common.files import atomic_writer

__all__ = ["api", "parse_body"]

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_TEXT_TYPES = ("application/json", "application/x-ndjson", "text/")
err_console = Console(stderr=True)


def parse_body(*, fields: Sequence[str], raw_fields: Sequence[str] = (), data: str | None) -> Any:
    """The request's JSON body from ``KEY=VALUE`` pairs or ``--data`` (text or @FILE).

    As in ``gh api``: a ``--field`` (-F) value is read as JSON where it is JSON
    (``rounds=5``, ``allow=true``, ``tags=["a"]``) and as text otherwise; a
    ``--raw-field`` (-f) value is always text (``id=123`` stays the string "123").

    Raises:
        ConfigError: pairs and --data both given, a pair without '=', or ``--data`` that
            is not JSON.
    """
    if (fields or raw_fields) and data is not None:
        raise ConfigError("Give the body as --field pairs or as --data, not both.")
    if data is not None:
        text = data
        if data.startswith("@"):
            try:
                text = Path(data[1:]).read_text(encoding="utf-8")
            except OSError as e:
                raise ConfigError(f"Cannot read {data[1:]}: {e.strerror}.") from e
        try:
            return json.loads(text)
        except ValueError as e:
            raise ConfigError(f"--data is not valid JSON: {e}.") from e
    if not fields and not raw_fields:
        return None
    body: dict[str, Any] = {}
    for item, typed in [*((f, True) for f in fields), *((f, False) for f in raw_fields)]:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"Write each field as KEY=VALUE, e.g. rounds=5; got {item!r}.")
        body[key] = value  # the text itself, unless typed and JSON
        if typed:
            with contextlib.suppress(ValueError):
                body[key] = json.loads(value)
    return body


def open_client(*, url: str, ca: Path | None, token_file: Path | None, timeout: float) -> ApiClient:
    """The client the command uses (tests replace this to talk to an app in process)."""
    if ca is None and default_ca().is_file():
        ca = default_ca()
    return ApiClient(url=url, token=read_token(token_file), ca=ca, timeout=timeout)


def api(
    method: Annotated[str, typer.Argument(help="GET, POST, PUT, PATCH or DELETE.")],
    path: Annotated[
        str, typer.Argument(help="The API path with any query, e.g. /v1/audit/events?actor=dana.")
    ],
    field: Annotated[
        list[str] | None,
        typer.Option(
            "--field",
            "-F",
            metavar="KEY=VALUE",
            help="A body field (repeat); a JSON value (5, true, [..]) keeps its type.",
        ),
    ] = None,
    raw_field: Annotated[
        list[str] | None,
        typer.Option(
            "--raw-field", "-f", metavar="KEY=VALUE", help="A body field whose value is text."
        ),
    ] = None,
    data: Annotated[
        str | None, typer.Option("--data", "-d", help="The JSON body, or @FILE to read it.")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Write the answer to FILE (0600), all of it or nothing."
        ),
    ] = None,
    url: Annotated[str, typer.Option(envvar=URL_ENV, help="The admin API.")] = DEFAULT_URL,
    ca: Annotated[
        Path | None,
        typer.Option(
            envvar=CA_ENV,
            help="CA of the server's certificate (the server's tls/ca.pem); default "
            "tls/ca.pem in FEDVAULT_DATA_DIR (./fedvault-data) if it exists, else the "
            "system's.",
        ),
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option(help=f"Read the API token from FILE instead of {TOKEN_ENV}.")
    ] = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for the server.")] = 60,
) -> None:
    """Call the admin API as the token's holder and print the answer.

    JSON answers are printed (indented); JSONL and CSV exports stream to standard output;
    model downloads need --output, which writes the file only once the whole, checked
    model arrived. Errors print the API's message and request id and exit 1.

    Examples: `fedvault api GET /v1/me`;
    `fedvault api POST /v1/projects -f id=oncology`;
    `fedvault api POST /v1/projects/oncology/runs -F rounds=5 -f dataset=digits`;
    `fedvault api GET /v1/models/digits-cnn/versions/5/download -o model.safetensors`.
    """
    verb = method.upper()
    if verb not in METHODS:
        raise typer.BadParameter(f"use one of {', '.join(METHODS)}", param_hint="METHOD")
    body = parse_body(fields=field or [], raw_fields=raw_field or [], data=data)
    with (
        open_client(url=url, ca=ca, token_file=token_file, timeout=timeout) as client,
        client.stream(verb, path, body=body) as response,
    ):
        kind = response.headers.get("content-type", "")
        if output is not None:
            with atomic_writer(output) as fh:
                for chunk in response.iter_bytes():
                    fh.write(chunk)
            err_console.print(f"Wrote {output} ({output.stat().st_size:,} bytes)")
        elif kind.startswith("application/json"):
            _print_json(parse_json(response.read(), what=f"{verb} {path}"))
        elif kind.startswith(_TEXT_TYPES):
            for chunk in response.iter_bytes():
                sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
        else:
            raise ConfigError(
                f"The answer is binary ({kind or 'no content type'}); write it to a file "
                "with --output FILE."
            )


def _print_json(value: Any) -> None:
    if value is None:
        return
    if sys.stdout.isatty():
        Console().print_json(data=value)
    else:  # plain JSON for pipes (jq and friends)
        sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
