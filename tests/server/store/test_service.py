"""The model store on SQLite and PostgreSQL: versions, lineage, integrity, rotation, crashes."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from fedvault.common.crypto import LocalKeyring
from fedvault.common.errors import (
    ConfigError,
    IntegrityError,
    KeyMaterialError,
    NotFound,
    StorageError,
)
from fedvault.server.store.cleanup import clean_up
from fedvault.server.store.service import Lineage, ModelStore, parse_ref

LINEAGE = Lineage(
    run_id="run-1",
    round=2,
    sites=[{"site": "hospital-a", "epsilon": 1.5, "delta": 1e-4, "noise-multiplier": 1.1}],
    dp={"target-epsilon": 8.0, "max-grad-norm": 1.0, "accountant": "prv"},
    metrics={"accuracy": 0.9},
    config={"num-server-rounds": 3},
)


def _put(store: ModelStore, data: bytes, model_id: str = "digits-cnn", **kw) -> int:
    return store.put(
        model_id, io.BytesIO(data), lineage=kw.pop("lineage", LINEAGE), creator="tester", **kw
    ).version


def _read(store: ModelStore, model_id: str = "digits-cnn", version: int | None = None) -> bytes:
    return b"".join(store.read(model_id, version))


def _blob(store: ModelStore, model_id: str, version: int) -> Path:
    (path,) = (store.blob_dir / model_id).glob(f"v{version}-*.fvb")
    return path


def test_versions_round_trip_with_lineage(store: ModelStore) -> None:
    first, second, empty = os.urandom(10_000), os.urandom(3 * 4096), b""
    assert [_put(store, d) for d in (first, second, empty)] == [1, 2, 3]
    assert _read(store, version=1) == first
    assert _read(store, version=2) == second
    assert _read(store) == empty  # newest
    v2 = store.get("digits-cnn", 2)
    assert v2.sha256 == hashlib.sha256(second).hexdigest()
    assert v2.size == len(second)
    assert v2.run_id == "run-1" and v2.round == 2
    assert v2.sites[0]["site"] == "hospital-a" and v2.sites[0]["epsilon"] == 1.5
    assert v2.dp["target-epsilon"] == 8.0 and v2.metrics == {"accuracy": 0.9}
    assert v2.created_at is not None and v2.created_by == "tester"
    assert "wrapped_key" not in v2.model_dump() and "blob" not in v2.model_dump()
    [(model, newest, count)] = store.list_models()
    assert (model.id, newest.version if newest else None, count) == ("digits-cnn", 3, 3)


def test_arrays_round_trip_and_parent_lineage(store: ModelStore) -> None:
    arrays = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.zeros(3)}
    store.put_arrays("base", arrays, lineage=Lineage(), creator="t")
    tuned = store.put_arrays("tuned", arrays, lineage=Lineage(parent=("base", 1)), creator="t")
    assert (tuned.parent_model_id, tuned.parent_version) == ("base", 1)
    back = store.load_arrays("tuned")
    assert set(back) == {"w", "b"} and np.array_equal(back["w"], arrays["w"])
    with pytest.raises(NotFound, match="base:7"):
        store.put_arrays("x", arrays, lineage=Lineage(parent=("base", 7)), creator="t")


def test_a_model_stays_in_the_project_that_created_it(store: ModelStore) -> None:
    """Another project's run cannot append versions to a model it does not own."""
    arrays = {"w": np.ones((2, 2), dtype=np.float32)}
    store.put_arrays("shared", arrays, lineage=Lineage(), creator="t", project="oncology")
    store.put_arrays("shared", arrays, lineage=Lineage(), creator="t", project="oncology")
    with pytest.raises(ConfigError, match="belongs to project 'oncology'"):
        store.put_arrays("shared", arrays, lineage=Lineage(), creator="t", project="cardiology")
    assert [v.version for v in store.versions("shared")] == [1, 2]
    assert store.list_models()[0][0].project == "oncology"


def test_unknown_models_versions_and_bad_refs_are_clear_errors(store: ModelStore) -> None:
    _put(store, b"abc")
    with pytest.raises(NotFound, match="digits-cnn:9"):
        store.get("digits-cnn", 9)
    with pytest.raises(NotFound, match="nope"):
        store.versions("nope")
    assert parse_ref("m:3") == ("m", 3) and parse_ref("m") == ("m", None)
    for bad in ("m:0", "m:x", "../etc", "", "a b"):
        with pytest.raises(ConfigError):
            parse_ref(bad)


def test_plaintext_never_reaches_disk(store: ModelStore, tmp_path: Path) -> None:
    marker = b"PLAINTEXT-WEIGHT-MARKER" * 50
    _put(store, marker)
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.name != "keyring.json":
            assert b"PLAINTEXT-WEIGHT-MARKER" not in path.read_bytes(), path


@pytest.mark.parametrize("where", ["header", "segment", "last-tag"])
def test_tampered_blob_is_an_integrity_error_and_pull_leaves_nothing(
    store: ModelStore, tmp_path: Path, where: str
) -> None:
    _put(store, os.urandom(3 * 4096 + 5))
    blob = _blob(store, "digits-cnn", 1)
    data = bytearray(blob.read_bytes())
    data[{"header": 8, "segment": 100, "last-tag": len(data) - 1}[where]] ^= 1
    blob.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="digits-cnn"):
        _read(store)
    out = tmp_path / "out" / "model.safetensors"
    with pytest.raises(IntegrityError):
        store.pull("digits-cnn", 1, out)
    assert not out.exists() and not list(out.parent.glob("*")), "no partial plaintext left"


def test_truncated_missing_and_moved_blobs_are_refused(store: ModelStore) -> None:
    _put(store, os.urandom(2 * 4096 + 1), "a")
    _put(store, os.urandom(100), "b")
    blob_a = _blob(store, "a", 1)
    original = blob_a.read_bytes()
    blob_a.write_bytes(original[: 4096 + 40])
    with pytest.raises(IntegrityError, match=r"a:1|a version 1"):
        _read(store, "a")
    blob_a.write_bytes(original)
    # a:1's blob copied over b:1's: the data key of b does not open it (and a's would not
    # either, since the object id is bound as associated data).
    _blob(store, "b", 1).write_bytes(original)
    with pytest.raises(IntegrityError):
        _read(store, "b")
    blob_a.unlink()
    with pytest.raises(IntegrityError, match="missing"):
        _read(store, "a")


def test_a_wrong_kek_cannot_read(store: ModelStore, tmp_path: Path) -> None:
    _put(store, b"weights")
    other = ModelStore(
        engine=store.engine,
        blob_dir=store.blob_dir,
        kek=LocalKeyring.create(tmp_path / "other.json"),
    )
    with pytest.raises(IntegrityError, match="wrong key-encryption key"):
        _read(other)


def test_recorded_hash_is_checked_on_every_read(store: ModelStore, tmp_path: Path) -> None:
    from sqlmodel import Session, select

    from fedvault.server.store.tables import ModelVersion

    _put(store, b"weights" * 1000)
    with Session(store.engine) as s:
        row = s.exec(select(ModelVersion)).one()
        row.sha256 = "0" * 64
        s.add(row)
        s.commit()
    with pytest.raises(IntegrityError, match="SHA-256"):
        _read(store)
    with pytest.raises(IntegrityError):
        store.pull("digits-cnn", None, tmp_path / "m.st")
    assert not (tmp_path / "m.st").exists()


def test_interrupted_write_leaves_no_version(store: ModelStore) -> None:
    _put(store, b"kept")

    class Broken(io.RawIOBase):
        calls = 0

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 2:
                raise RuntimeError("source died")
            return os.urandom(size)

    with pytest.raises(RuntimeError):
        store.put("digits-cnn", Broken(), lineage=LINEAGE, creator="t")  # type: ignore[arg-type]
    assert [v.version for v in store.versions("digits-cnn")] == [1]
    assert len(list((store.blob_dir / "digits-cnn").iterdir())) == 1
    assert _read(store) == b"kept"
    assert _put(store, b"next") == 2


def test_full_disk_is_a_clear_error_and_loses_nothing(
    store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _put(store, b"kept")

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(StorageError, match=r"No space left.*Nothing was stored"):
        _put(store, b"x" * 10_000)
    monkeypatch.undo()
    assert [v.version for v in store.versions("digits-cnn")] == [1]
    assert _read(store) == b"kept"


def test_rotation_rewraps_every_key_without_touching_blobs(store: ModelStore) -> None:
    payloads = [os.urandom(5000 + i) for i in range(3)]
    for p in payloads:
        _put(store, p)
    before = {p.name: p.read_bytes() for p in (store.blob_dir / "digits-cnn").iterdir()}
    assert store.rotate_kek() == (2, 3)
    after = {p.name: p.read_bytes() for p in (store.blob_dir / "digits-cnn").iterdir()}
    assert before == after, "rotation must not rewrite any blob"
    assert [_read(store, version=v) for v in (1, 2, 3)] == payloads
    status = {s.version: (s.objects, s.current) for s in store.kek_status()}
    assert status == {1: (0, False), 2: (3, True)}
    store.retire_kek(1)
    assert [_read(store, version=v) for v in (1, 2, 3)] == payloads
    assert store.rotate_kek() == (3, 3)
    with pytest.raises(KeyMaterialError, match="still wraps 3"):
        store.retire_kek(3)


def test_concurrent_writers_get_distinct_versions(store: ModelStore) -> None:
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            _put(store, f"payload-{i}".encode())
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    versions = store.versions("digits-cnn")
    assert sorted(v.version for v in versions) == [1, 2, 3, 4]
    assert sorted(_read(store, version=v.version) for v in versions) == sorted(
        f"payload-{i}".encode() for i in range(4)
    )


def test_a_writer_killed_mid_write_loses_nothing_already_stored(
    store: ModelStore, db_url: str, tmp_path: Path
) -> None:
    _put(store, b"kept")
    script = textwrap.dedent(f"""
        import io, time
        from pathlib import Path
        from fedvault.common.crypto import LocalKeyring
        from fedvault.server.core.db import open_database
        from fedvault.server.store.service import Lineage, ModelStore

        class Slow(io.RawIOBase):
            def readable(self): return True
            def read(self, size=-1):
                print("writing", flush=True)
                time.sleep(0.2)
                return b"z" * size

        store = ModelStore(engine=open_database({db_url!r}), blob_dir=Path({str(store.blob_dir)!r}),
                           kek=LocalKeyring.load(Path({str(tmp_path / "keyring.json")!r})),
                           segment_size=4096)
        store.put("digits-cnn", Slow(), lineage=Lineage(), creator="victim")
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    for _ in range(3):
        assert proc.stdout.readline().startswith(b"writing")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(0.1)
    assert [v.version for v in store.versions("digits-cnn")] == [1]
    assert _read(store) == b"kept"
    assert _put(store, b"after") >= 2
    assert _read(store) == b"after"
    # What the killed writer left (its reserved version, its half-written file) is
    # cleared; finished versions and their blobs are not.
    blobs_before = sorted(p.name for p in store.blob_dir.rglob("*") if p.is_file())
    assert any(name.endswith(".tmp") for name in blobs_before)
    assert clean_up(store).empty, "nothing is an hour old yet"
    done = clean_up(store, older_than=timedelta(0))
    assert done.versions == ["digits-cnn:2"]
    assert [Path(f).name for f in done.files] == [n for n in blobs_before if n.endswith(".tmp")]
    assert [v.version for v in store.versions("digits-cnn")] == [1, 3]
    assert _read(store, version=1) == b"kept" and _read(store) == b"after"
    assert clean_up(store, older_than=timedelta(0)).empty


def test_clean_up_refuses_a_negative_age(store: ModelStore) -> None:
    with pytest.raises(ConfigError, match="must not be negative"):
        clean_up(store, older_than=timedelta(minutes=-1))


def test_a_long_lived_store_follows_rotation_done_elsewhere(store: ModelStore) -> None:
    """A ServerApp opened the store before an admin rotated and retired: nothing is lost."""
    _put(store, b"before")
    admin = ModelStore(
        engine=store.engine,
        blob_dir=store.blob_dir,
        kek=LocalKeyring.load(store.kek.path),  # type: ignore[attr-defined]
    )
    assert admin.rotate_kek() == (2, 1)
    admin.retire_kek(1)
    version = _put(store, b"after")  # the old handle wraps under the new current key
    assert store.get("digits-cnn", version).model_dump()["version"] == version
    assert _read(admin, version=version) == b"after"
    assert _read(admin, version=1) == b"before"


def test_two_stale_keyrings_rotating_keep_every_key(store: ModelStore) -> None:
    path = store.kek.path  # type: ignore[attr-defined]
    first, second = LocalKeyring.load(path), LocalKeyring.load(path)
    assert first.rotate() == 2
    assert second.rotate() == 3  # saw version 2 under the lock, did not overwrite it
    merged = LocalKeyring.load(path)
    assert [v.version for v in merged.versions()] == [1, 2, 3]
    _put(store, b"x")
    assert _read(store) == b"x"
