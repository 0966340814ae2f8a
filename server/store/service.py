"""The model store: put, read, pull and re-key encrypted model versions."""

from __future__ import annotations

import hashlib
import io
import logging
import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError as SQLIntegrityError
from sqlmodel import Session, col, select

from fedvault.common.crypto import KekProvider, WrappedKey, open_object, rewrap, seal_object
from fedvault.common.crypto.streaming import DEFAULT_SEGMENT_SIZE, TAG_SIZE
from fedvault.common.errors import (
    ConfigError,
    IntegrityError,
    KeyMaterialError,
    NotFound,
    StorageError,
)
from fedvault.common.files import atomic_writer
from fedvault.common.serialization import arrays_from_bytes, arrays_to_bytes
from fedvault.server.store._pipeline import (
    BackgroundConsumer,
    PrefetchReader,
    SyncingWriter,
    abandon,
    close_all,
)
from fedvault.server.store.tables import (
    ModelRecord,
    ModelVersion,
    ModelVersionPublic,
    VersionState,
)

__all__ = ["KekStatus", "Lineage", "ModelStore", "parse_ref"]

log = logging.getLogger("fedvault.server.store")

_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_VERSION_RETRIES = 5


def _check_model_id(model_id: str) -> str:
    if not _MODEL_ID.fullmatch(model_id) or ".." in model_id:
        raise ConfigError(
            f"Invalid model id {model_id!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    return model_id


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``ID`` or ``ID:VERSION`` -> (id, version or None for the newest)."""
    model_id, sep, version = ref.partition(":")
    _check_model_id(model_id)
    if not sep:
        return model_id, None
    if not version.isdigit() or int(version) < 1:
        raise ConfigError(f"Invalid version in {ref!r}: write ID:N with N a positive integer.")
    return model_id, int(version)


@dataclass(frozen=True)
class Lineage:
    """Where a version came from. ``sites`` holds each contributing site's privacy figures."""

    run_id: str | None = None
    round: int | None = None
    sites: list[dict[str, Any]] = field(default_factory=list)
    dp: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    parent: tuple[str, int] | None = None


@dataclass(frozen=True)
class KekStatus:
    version: int
    created: str
    retired: bool
    current: bool
    objects: int


class ModelStore:
    """Encrypted, versioned models with lineage, over one database and one blob directory."""

    def __init__(
        self,
        *,
        engine: Engine,
        blob_dir: Path,
        kek: KekProvider,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
    ):
        self.engine = engine
        self.blob_dir = blob_dir
        self.kek = kek
        self.segment_size = segment_size

    # --- writing -------------------------------------------------------------------------

    def put(
        self,
        model_id: str,
        source: BinaryIO,
        *,
        lineage: Lineage,
        creator: str,
        description: str = "",
        fmt: str = "safetensors",
        project: str | None = None,
    ) -> ModelVersionPublic:
        """Store ``source`` as the next version of ``model_id`` (created if new).

        The version number is reserved first (state ``writing``, invisible to readers); the
        blob is written to a temporary file, fsynced and renamed; only then does the row
        become ``ready``. A crash or error at any point leaves no visible version.
        A new model is created in ``project``; an existing one must belong to it.
        """
        _check_model_id(model_id)
        if lineage.parent is not None:
            self._ready(*lineage.parent)
        row = self._reserve(
            model_id, lineage=lineage, creator=creator, description=description, project=project
        )
        row.format = fmt
        version, row_id, committed = row.version, row.id, False
        rel = Path(model_id) / f"v{version}-{secrets.token_hex(4)}.fvb"
        path = self.blob_dir / rel
        digest = hashlib.sha256()
        try:
            with atomic_writer(path) as fh:
                reader = PrefetchReader(source, chunk=self.segment_size, on_chunk=digest.update)
                writer = SyncingWriter(fh)
                try:
                    wrapped, size = seal_object(
                        reader,  # type: ignore[arg-type]
                        writer.write,
                        kek=self.kek,
                        object_id=model_id,
                        version=version,
                        segment_size=self.segment_size,
                    )
                except BaseException:
                    abandon(writer, reader)
                    raise
                close_all(writer, reader)
            row.blob = str(rel)
            row.sha256 = digest.hexdigest()
            row.size = size
            row.stored_size = path.stat().st_size
            row.kek_version = wrapped.kek_version
            row.wrapped_key = wrapped.sealed
            row.state = VersionState.READY
            with Session(self.engine, expire_on_commit=False) as session:
                session.add(row)
                session.commit()
                committed = True
        except BaseException as e:
            if not committed:  # once the row is ready, its blob must stay
                path.unlink(missing_ok=True)
                self._discard(row_id)
            if isinstance(e, OSError) and not committed:
                raise StorageError(
                    f"Could not store {model_id}:{version} in {self.blob_dir}: "
                    f"{e.strerror or e}. Nothing was stored and earlier versions are intact; "
                    "check free space and permissions, then retry."
                ) from e
            raise
        log.info("Stored %s:%d (%d bytes, KEK v%d)", model_id, version, size, row.kek_version)
        return ModelVersionPublic.model_validate(row)

    def put_arrays(
        self,
        model_id: str,
        arrays: Mapping[str, np.ndarray],
        *,
        lineage: Lineage,
        creator: str,
        project: str | None = None,
    ) -> ModelVersionPublic:
        """Store named weight arrays (safetensors) as the next version of ``model_id``."""
        data = io.BytesIO(arrays_to_bytes(arrays))
        return self.put(model_id, data, lineage=lineage, creator=creator, project=project)

    def _reserve(
        self,
        model_id: str,
        *,
        lineage: Lineage,
        creator: str,
        description: str,
        project: str | None,
    ) -> ModelVersion:
        for _ in range(_VERSION_RETRIES):
            with Session(self.engine) as session:
                record = session.get(ModelRecord, model_id)
                if record is None:
                    session.add(
                        ModelRecord(
                            id=model_id,
                            description=description,
                            created_by=creator,
                            project=project,
                        )
                    )
                    try:
                        session.commit()
                    except SQLIntegrityError:
                        session.rollback()  # created concurrently; fine
                elif project is not None and record.project not in (None, project):
                    raise ConfigError(
                        f"The model {model_id!r} belongs to project {record.project!r}, not "
                        f"{project!r}; give this run another model-name."
                    )
                newest = session.exec(
                    select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model_id)
                ).one()
                row = ModelVersion(
                    model_id=model_id,
                    version=(newest or 0) + 1,
                    run_id=lineage.run_id,
                    round=lineage.round,
                    parent_model_id=lineage.parent[0] if lineage.parent else None,
                    parent_version=lineage.parent[1] if lineage.parent else None,
                    sites=lineage.sites,
                    dp=lineage.dp,
                    metrics=lineage.metrics,
                    config=lineage.config,
                    created_by=creator,
                )
                session.add(row)
                try:
                    session.commit()
                except SQLIntegrityError:
                    session.rollback()  # another writer took this number; take the next
                    continue
                session.refresh(row)
                session.expunge(row)
                return row
        raise ConfigError(f"Could not reserve a version number for {model_id!r}; try again.")

    def _discard(self, row_id: int | None) -> None:
        with Session(self.engine) as session:
            stored = session.get(ModelVersion, row_id)
            if stored is not None and stored.state == VersionState.WRITING:
                session.delete(stored)
                session.commit()

    # --- reading -------------------------------------------------------------------------

    def list_models(self) -> list[tuple[ModelRecord, ModelVersionPublic | None, int]]:
        """Every model with its newest ready version and its count of ready versions."""
        out = []
        with Session(self.engine) as session:
            for model in session.exec(select(ModelRecord).order_by(col(ModelRecord.id))):
                versions = self._versions(session, model.id)
                newest = ModelVersionPublic.model_validate(versions[-1]) if versions else None
                out.append((model, newest, len(versions)))
        return out

    def versions(self, model_id: str) -> list[ModelVersionPublic]:
        """All ready versions of a model, oldest first."""
        with Session(self.engine) as session:
            if session.get(ModelRecord, _check_model_id(model_id)) is None:
                raise NotFound(f"No model {model_id!r}. `fedvault models list` shows them all.")
            return [ModelVersionPublic.model_validate(v) for v in self._versions(session, model_id)]

    @staticmethod
    def _versions(session: Session, model_id: str) -> list[ModelVersion]:
        return list(
            session.exec(
                select(ModelVersion)
                .where(ModelVersion.model_id == model_id, ModelVersion.state == VersionState.READY)
                .order_by(col(ModelVersion.version))
            )
        )

    def get(self, model_id: str, version: int | None = None) -> ModelVersionPublic:
        """One ready version (the newest when ``version`` is None)."""
        return ModelVersionPublic.model_validate(self._ready(model_id, version))

    def latest_of_run(self, model_id: str, run_id: str) -> ModelVersionPublic | None:
        """The newest ready version a run stored, if any (where a resumed run continues)."""
        with Session(self.engine) as session:
            row = session.exec(
                select(ModelVersion)
                .where(
                    ModelVersion.model_id == model_id,
                    ModelVersion.run_id == run_id,
                    ModelVersion.state == VersionState.READY,
                )
                .order_by(col(ModelVersion.version).desc())
                .limit(1)
            ).first()
            return ModelVersionPublic.model_validate(row) if row else None

    def _ready(self, model_id: str, version: int | None = None) -> ModelVersion:
        _check_model_id(model_id)
        with Session(self.engine) as session:
            query = select(ModelVersion).where(
                ModelVersion.model_id == model_id, ModelVersion.state == VersionState.READY
            )
            if version is None:
                query = query.order_by(col(ModelVersion.version).desc()).limit(1)
            else:
                query = query.where(ModelVersion.version == version)
            row = session.exec(query).first()
        if row is None:
            what = f"{model_id}:{version}" if version else f"version of {model_id!r}"
            raise NotFound(f"No stored {what}. `fedvault models list` shows what exists.")
        return row

    def read(self, model_id: str, version: int | None = None) -> Iterator[bytes]:
        """Yield the plaintext of a version in segments, checking its SHA-256 at the end.

        Raises:
            NotFound: no such ready version.
            IntegrityError: the blob is missing, altered, moved, or its hash differs.
        """
        row = self._ready(model_id, version)
        return self._read_row(row)

    def _read_row(self, row: ModelVersion) -> Iterator[bytes]:
        name = f"{row.model_id}:{row.version}"
        path = self.blob_dir / str(row.blob)
        if not path.is_file():
            raise IntegrityError(
                f"{name}: its encrypted blob {path} is missing. Restore the data directory "
                "from backup; the database still records the version and its hash."
            )
        wrapped = WrappedKey(int(row.kek_version or 0), bytes(row.wrapped_key or b""))

        def segments() -> Iterator[bytes]:
            digest = hashlib.sha256()
            with path.open("rb") as fh:
                source = PrefetchReader(fh, chunk=self.segment_size + TAG_SIZE)
                try:
                    hasher = BackgroundConsumer(digest.update)
                except BaseException:
                    abandon(source)
                    raise
                try:
                    for chunk in open_object(
                        source,  # type: ignore[arg-type]
                        kek=self.kek,
                        wrapped=wrapped,
                        object_id=row.model_id,
                        version=row.version,
                    ):
                        hasher.feed(chunk)
                        yield chunk
                except BaseException:
                    abandon(hasher, source)
                    raise
                close_all(hasher, source)
            if digest.hexdigest() != row.sha256:
                raise IntegrityError(
                    f"{name}: the decrypted bytes do not match the recorded SHA-256."
                )

        return segments()

    def load_arrays(self, model_id: str, version: int | None = None) -> dict[str, np.ndarray]:
        """Decrypt a version into memory and parse its weights (verified first)."""
        data = b"".join(self.read(model_id, version))
        return arrays_from_bytes(data, name=f"{model_id}:{version or 'latest'}")

    def pull(self, model_id: str, version: int | None, out: Path) -> ModelVersionPublic:
        """Decrypt a version to ``out``; on any integrity error nothing is left at ``out``."""
        row = self._ready(model_id, version)
        with atomic_writer(out, mode=0o600) as fh:
            for chunk in self._read_row(row):
                fh.write(chunk)
        return ModelVersionPublic.model_validate(row)

    # --- keys ----------------------------------------------------------------------------

    def rotate_kek(self, *, new_version: bool = True) -> tuple[int, int]:
        """Make a new KEK version current and re-wrap every data key under it.

        Blobs are not touched: only each version's wrapped key and KEK version change.
        Re-running after an interruption finishes the job. With ``new_version=False`` (keys
        supplied from outside, e.g. the environment) only the re-wrapping runs.

        Returns:
            (current KEK version, number of data keys re-wrapped).
        """
        if new_version:
            if not self.kek.creates_keys:
                raise KeyMaterialError(
                    f"Keys from {self.kek.description} are made outside fedvault; add the new "
                    "key there, then re-wrap with `fedvault keys rotate --rewrap-only`."
                )
            self.kek.rotate()
        current = self.kek.current_version()
        count = 0
        with Session(self.engine) as session:
            stale = session.exec(
                select(ModelVersion).where(
                    ModelVersion.state == VersionState.READY, ModelVersion.kek_version != current
                )
            ).all()
            for row in stale:
                fresh = rewrap(
                    WrappedKey(int(row.kek_version or 0), bytes(row.wrapped_key or b"")),
                    kek=self.kek,
                    object_id=row.model_id,
                    version=row.version,
                )
                row.kek_version, row.wrapped_key = fresh.kek_version, fresh.sealed
                session.add(row)
                count += 1
            session.commit()
        log.info("KEK rotation: version %d current, %d data keys re-wrapped", current, count)
        return current, count

    def kek_status(self) -> list[KekStatus]:
        """Each KEK version with how many stored versions are wrapped under it."""
        with Session(self.engine) as session:
            counts = dict(
                session.exec(
                    select(ModelVersion.kek_version, func.count())
                    .where(ModelVersion.state == VersionState.READY)
                    .group_by(col(ModelVersion.kek_version))
                ).all()
            )
        current = self.kek.current_version()
        return [
            KekStatus(
                version=v.version,
                created=v.created,
                retired=v.retired,
                current=v.version == current,
                objects=int(counts.get(v.version, 0)),
            )
            for v in self.kek.versions()
        ]

    def retire_kek(self, version: int) -> None:
        """Retire a KEK version, refusing while any stored version still needs it."""
        in_use = next((s.objects for s in self.kek_status() if s.version == version), 0)
        with Session(self.engine) as session:
            writing = session.exec(
                select(func.count()).where(ModelVersion.state == VersionState.WRITING)
            ).one()
        if writing:
            raise KeyMaterialError(
                f"{writing} version(s) are being written right now; retire KEK version "
                f"{version} once they are stored (or, after a crash, run `fedvault models "
                "clean-up`)."
            )
        if in_use:
            raise KeyMaterialError(
                f"KEK version {version} still wraps {in_use} data key(s); run "
                "`fedvault keys rotate` first so nothing depends on it."
            )
        self.kek.retire(version)
