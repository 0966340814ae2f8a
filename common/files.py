"""Durable file writes: temp file, fsync, rename, fsync the directory."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_writer", "fsync_dir"]


def fsync_dir(path: Path) -> None:
    """Make a rename or create inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: Path, *, mode: int = 0o600) -> Iterator[BinaryIO]:
    """Write ``path`` all at once or not at all.

    Yields a file opened on a hidden temporary beside ``path``. When the block ends normally
    the file is fsynced and renamed over ``path``; when it raises, the temporary is removed
    and ``path`` is untouched. A crash at any point leaves either the old file or the new.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh, unpredictable name (O_EXCL): nothing pre-created can lend it its mode.
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
