"""Overlap hashing and file I/O with encryption: bounded background threads, errors re-raised.

AES-GCM holds the GIL, but SHA-256 over large buffers, file writes and fdatasync release it,
so running them beside the cipher roughly hides their cost on a machine with two cores.
Each queue holds at most ``depth`` chunks, so memory stays bounded whatever the object size.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, BinaryIO

__all__ = ["BackgroundConsumer", "PrefetchReader", "SyncingWriter", "abandon", "close_all"]

log = logging.getLogger(__name__)
_DONE = object()


class _Worker:
    def __init__(self, depth: int):
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._guarded, daemon=True)
        self._thread.start()

    def _guarded(self) -> None:
        try:
            self._run()
        except BaseException as e:  # noqa: BLE001 -- handed to the caller's thread, re-raised there
            self._error = e
            self._drain()
            self._queue.put_nowait(_DONE)  # wakes a reader waiting for the next chunk

    def _run(self) -> None:
        raise NotImplementedError

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def _check(self) -> None:
        if self._error is not None:
            raise self._error


class PrefetchReader(_Worker):
    """Reads ``source`` ahead in a thread, calling ``on_chunk`` on each piece read."""

    def __init__(
        self,
        source: BinaryIO,
        *,
        chunk: int,
        on_chunk: Callable[[bytes], object] | None = None,
        depth: int = 4,
    ):
        self._source, self._chunk, self._on_chunk = source, chunk, on_chunk
        self._buffer = b""
        self._eof = False
        self._stopped = threading.Event()
        super().__init__(depth)

    def _run(self) -> None:
        while not self._stopped.is_set():
            data = self._source.read(self._chunk)
            if not data:
                self._queue.put(_DONE)
                return
            if self._on_chunk is not None:
                self._on_chunk(data)
            self._queue.put(data)

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (fewer only at the end of the stream)."""
        while not self._eof and (size < 0 or len(self._buffer) < size):
            item = self._queue.get()
            if item is _DONE:
                self._eof = True
                self._check()
                break
            self._buffer = item if not self._buffer else self._buffer + item
        self._check()
        if size < 0 or size >= len(self._buffer):
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out

    def close(self) -> None:
        """Stop reading ahead (after an error downstream) and wait for the thread."""
        self._stopped.set()
        self._drain()
        self._thread.join()
        self._check()


class BackgroundConsumer(_Worker):
    """Calls ``consume`` on each chunk in a thread (e.g. a hash's ``update``)."""

    def __init__(self, consume: Callable[[bytes], object], *, depth: int = 4):
        self._consume = consume
        super().__init__(depth)

    def _run(self) -> None:
        while (item := self._queue.get()) is not _DONE:
            self._consume(item)

    def feed(self, data: bytes) -> None:
        self._check()
        self._queue.put(data)

    def close(self) -> None:
        """Wait for every queued chunk; re-raise the first error ``consume`` raised."""
        if self._error is None:
            self._queue.put(_DONE)
        self._thread.join()
        self._check()


class SyncingWriter(BackgroundConsumer):
    """Writes to ``fh`` in a thread, flushing to disk every ``sync_every`` bytes.

    Flushing as it goes keeps the final fsync short: the disk works while the caller encrypts.
    """

    def __init__(self, fh: BinaryIO, *, sync_every: int = 64 << 20, depth: int = 4):
        self._fh, self._sync_every, self._unsynced = fh, sync_every, 0
        super().__init__(self._write_chunk, depth=depth)

    def _write_chunk(self, data: bytes) -> None:
        self._fh.write(data)
        self._unsynced += len(data)
        if self._unsynced >= self._sync_every:
            self._fh.flush()
            os.fdatasync(self._fh.fileno())
            self._unsynced = 0

    write = BackgroundConsumer.feed


def close_all(*workers: PrefetchReader | SyncingWriter | BackgroundConsumer) -> None:
    """Close every worker; re-raise the first error any of them had."""
    first: BaseException | None = None
    for worker in workers:
        try:
            worker.close()
        except BaseException as e:  # noqa: BLE001 -- every worker closes; the first error is raised
            first = first or e
    if first is not None:
        raise first


def abandon(*workers: PrefetchReader | SyncingWriter | BackgroundConsumer) -> None:
    """Close workers while another error is already on its way up.

    Their own errors are consequences of that one (e.g. a write after the source failed),
    so they are logged, not raised: the original error is what the caller must see.
    """
    for worker in workers:
        try:
            worker.close()
        except BaseException as e:  # noqa: BLE001 -- a consequence of the error already raised
            log.debug("Worker stopped with %r while handling an earlier error", e)
