"""Durable file writes: temp file, fsync, rename, fsync the directory."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from fedvault.common.errors import KeyMaterialError

__all__ = ["atomic_writer", "create_private", "fsync_dir", "read_private"]


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


def create_private(path: Path, data: bytes, *, what: str) -> None:
    """Write a new owner-only (0600) file holding key material; never overwrite one.

    Raises:
        KeyMaterialError: ``path`` exists (it is left untouched).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyMaterialError(f"{what} already exists at {path}; it was left untouched.") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def read_private(path: Path, *, what: str, create_hint: str) -> bytes:
    """Read a key file, refusing one that anyone but its owner can read or write.

    Raises:
        KeyMaterialError: the file is missing (the message says how to create it) or its
            mode lets the group or others in.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyMaterialError(f"No {what} at {path}. {create_hint}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyMaterialError(
            f"The {what} {path} is readable or writable by others (mode "
            f"{stat.filemode(mode)}); refusing to use it. Run `chmod 600 {path}` and treat "
            "the keys in it as exposed: replace or rotate them."
        )
    return path.read_bytes()
