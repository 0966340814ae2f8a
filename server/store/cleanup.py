"""Clear what writers killed mid-write left behind: reserved versions and stray blob files."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlmodel import Session, col, select

from fedvault.common.errors import ConfigError
from fedvault.server.store.service import ModelStore
from fedvault.server.store.tables import ModelVersion, VersionState

__all__ = ["DEFAULT_AGE", "CleanUp", "clean_up"]

log = logging.getLogger("fedvault.server.store")

# A write reserves its version, streams the blob, then marks the row ready; a gigabyte
# takes seconds. Anything left unfinished for an hour belongs to a writer that died.
DEFAULT_AGE = timedelta(hours=1)


@dataclass(frozen=True)
class CleanUp:
    """What ``clean_up`` removed."""

    versions: list[str]  # refs of versions that were never finished
    files: list[str]  # blob-directory paths no finished version refers to

    @property
    def empty(self) -> bool:
        return not self.versions and not self.files


def clean_up(store: ModelStore, *, older_than: timedelta = DEFAULT_AGE) -> CleanUp:
    """Remove unfinished versions and unreferenced blob files older than ``older_than``.

    A version stays ``writing`` and invisible when its writer is killed; while one does,
    KEK retirement is refused. Finished versions and their blobs are never touched, and
    nothing younger than ``older_than`` is, so writes in progress elsewhere are safe.

    Raises:
        ConfigError: ``older_than`` is negative.
    """
    if older_than < timedelta(0):
        raise ConfigError(f"older_than must not be negative, got {older_than}.")
    cutoff = datetime.now(UTC) - older_than
    removed: list[str] = []
    with Session(store.engine) as session:
        stale = session.exec(
            select(ModelVersion)
            .where(ModelVersion.state == VersionState.WRITING)
            .where(col(ModelVersion.created_at) <= cutoff)
        ).all()
        for row in stale:
            removed.append(f"{row.model_id}:{row.version}")
            session.delete(row)
        session.commit()
        referenced = {b for b in session.exec(select(ModelVersion.blob)).all() if b}
    files = _stray_files(store, referenced, before=time.time() - older_than.total_seconds())
    if removed or files:
        log.warning(
            "Cleared %d unfinished model version(s) and %d stray blob file(s)",
            len(removed),
            len(files),
        )
    return CleanUp(removed, files)


def _stray_files(store: ModelStore, referenced: set[str], *, before: float) -> list[str]:
    """Delete blob files (finished or half-written temporaries) that no row names."""
    stray: list[str] = []
    if not store.blob_dir.is_dir():
        return stray
    for path in sorted(store.blob_dir.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        rel = str(path.relative_to(store.blob_dir))
        if rel in referenced or path.stat().st_mtime > before:
            continue
        if not (path.suffix == ".fvb" or (path.name.startswith(".") and path.suffix == ".tmp")):
            continue  # not a file the store writes: leave it to the operator
        path.unlink(missing_ok=True)
        stray.append(rel)
    return stray
