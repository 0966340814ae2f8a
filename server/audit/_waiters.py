"""Callers waiting on the writer: a future per event, settled in one go per batch."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from concurrent.futures import Future

from fedvault.server.audit.canonical import event_json_parts
from fedvault.server.audit.events import EventDraft, Receipt
from fedvault.server.audit.signing import Checkpoint

__all__ = ["Control", "Pending", "settle"]


class Pending:
    """An event waiting to be committed, and how to tell its caller.

    A thread waits on a ``concurrent.futures.Future``; asyncio code on a future of its own
    loop, which the writer settles with one call into that loop per batch.
    """

    __slots__ = ("draft", "future", "head", "loop", "middle")

    def __init__(self, draft: EventDraft, loop: asyncio.AbstractEventLoop | None = None):
        self.draft = draft
        self.head, self.middle = event_json_parts(*draft)  # in the caller's thread
        self.loop = loop
        self.future: Future[Receipt] | asyncio.Future[Receipt] = (
            Future() if loop is None else loop.create_future()
        )


class Control:
    """A request to sign a checkpoint now, and to stop after it when ``stop``."""

    __slots__ = ("future", "stop")

    def __init__(self, *, stop: bool):
        self.stop = stop
        self.future: Future[Checkpoint | None] = Future()


_Settled = tuple["asyncio.Future[Receipt]", "Receipt | BaseException"]


def _settle_in_loop(items: list[_Settled]) -> None:
    for future, outcome in items:
        if future.done():  # the caller was cancelled; the event is committed all the same
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


def settle(pending: Sequence[Pending], outcomes: Sequence[Receipt] | BaseException) -> None:
    """Give each waiting caller its receipt, or all of them the same error."""
    results = itertools.repeat(outcomes) if isinstance(outcomes, BaseException) else outcomes
    loops: dict[asyncio.AbstractEventLoop, list[_Settled]] = {}
    for p, outcome in zip(pending, results, strict=False):
        if p.loop is not None:
            loops.setdefault(p.loop, []).append((p.future, outcome))  # type: ignore[arg-type]
        elif isinstance(outcome, BaseException):
            p.future.set_exception(outcome)
        else:
            p.future.set_result(outcome)  # type: ignore[arg-type]
    for loop, items in loops.items():
        try:
            loop.call_soon_threadsafe(_settle_in_loop, items)
        except RuntimeError:  # the loop was closed: nobody is waiting any more
            continue
