"""Stream matching events as JSON lines or CSV, a chunk at a time, never all in memory."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Literal

from sqlalchemy.engine import Engine

from fedvault.common.errors import ConfigError
from fedvault.server.audit._chain import EVENTS
from fedvault.server.audit.query import EventFilter, iter_events

__all__ = ["FORMATS", "export_events"]

FORMATS = ("jsonl", "csv")
_COLUMNS = [c.name for c in EVENTS.columns]
_DETAILS = _COLUMNS.index("details")


def _jsonl(rows: Iterator[tuple[object, ...]]) -> Iterator[str]:
    for row in rows:
        head = {k: v for k, v in zip(_COLUMNS, row, strict=True) if k != "details"}
        # details are stored as canonical JSON: written as they are, byte for byte.
        yield json.dumps(head, ensure_ascii=False)[:-1] + f',"details":{row[_DETAILS]}}}\n'


def _csv(rows: Iterator[tuple[object, ...]], batch: int = 500) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_COLUMNS)
    for i, row in enumerate(rows, 1):
        writer.writerow(row)
        if i % batch == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def export_events(
    engine: Engine, flt: EventFilter, *, fmt: Literal["jsonl", "csv"] | str = "jsonl"
) -> Iterator[str]:
    """Text chunks of every matching event, oldest first.

    JSON lines carry each event with its ``prev_hash`` and ``hash``, so an export can be
    re-verified on its own; CSV has one column per field and details as JSON. An export is
    itself an auditable action: callers record it first (the CLI and API do).

    Raises:
        ConfigError: ``fmt`` is not one of ``FORMATS``.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"Invalid export format {fmt!r}: use one of {', '.join(FORMATS)}.")
    rows = iter_events(engine, flt)
    return _jsonl(rows) if fmt == "jsonl" else _csv(rows)
