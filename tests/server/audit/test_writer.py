"""The batching writer: durable acknowledgements, one chain across threads and processes,
checkpoints on count, time and close, and clear errors."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from fedvault.common.errors import ConfigError, IntegrityError, StorageError
from fedvault.server.audit import AuditLog, SigningKey, verify_log
from tests.server.audit.factories import drop_triggers, event


def _count(url: str, table: str = "audit_events") -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


def test_append_returns_only_once_the_event_is_committed(
    make_log: Callable[..., AuditLog], db_url: str
) -> None:
    log = make_log()
    for n in range(1, 4):
        receipt = log.append(**event(request_id=f"r{n}"))
        assert receipt.seq == n
        assert _count(db_url) == n, "another connection sees the event at once"


def test_concurrent_appends_form_one_gapless_verified_chain(
    make_log: Callable[..., AuditLog], engine: Engine, signing_key: SigningKey
) -> None:
    log = make_log(checkpoint_every=50)
    seqs: list[int] = []

    def work(worker: int) -> None:
        for i in range(40):
            seqs.append(log.append(**event(actor=f"user-{worker}", details={"i": i})).seq)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    assert sorted(seqs) == list(range(1, 321))
    report = verify_log(engine, signing_key.public)
    assert report.ok, report.problem
    assert (report.events, report.signed_size) == (320, 320)


def test_two_writers_on_one_database_keep_one_chain(
    make_log: Callable[..., AuditLog], engine: Engine, signing_key: SigningKey
) -> None:
    first, second = make_log(checkpoint_every=3), make_log(checkpoint_every=5)
    for i in range(12):
        (first if i % 3 else second).append(**event(details={"i": i}))
    first.close()
    second.close()
    report = verify_log(engine, signing_key.public)
    assert report.ok, report.problem
    assert report.events == 12 and report.unsigned == 0


def test_checkpoints_on_count_time_and_close(
    make_log: Callable[..., AuditLog], db_url: str
) -> None:
    log = make_log(checkpoint_every=5, checkpoint_interval=0.3)
    for _ in range(10):
        log.append(**event())
    assert _count(db_url, "audit_checkpoints") == 2  # after events 5 and 10
    log.append(**event())
    deadline = time.monotonic() + 10
    while _count(db_url, "audit_checkpoints") < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _count(db_url, "audit_checkpoints") == 3, "an idle unsigned event is signed in time"
    log.append(**event())
    log.close()
    assert _count(db_url, "audit_checkpoints") == 4
    assert log.checkpoint_every == 5


def test_checkpoint_on_demand_covers_everything_so_far(make_log: Callable[..., AuditLog]) -> None:
    log = make_log()
    assert log.checkpoint() is None, "nothing to sign yet"
    log.append(**event())
    log.append(**event())
    checkpoint = log.checkpoint()
    assert checkpoint is not None and checkpoint.tree_size == 2
    assert log.checkpoint() is None


def test_invalid_events_are_refused_before_anything_is_written(
    make_log: Callable[..., AuditLog], db_url: str
) -> None:
    log = make_log()
    cases = [
        ({"actor": ""}, "actor"),
        ({"actor": "bad\nname"}, "actor"),
        ({"actor_type": "User"}, "actor type"),
        ({"action": "Model Pull"}, "action"),
        ({"resource_type": "a" * 40}, "resource type"),
        ({"resource_id": ""}, "resource id"),
        ({"outcome": "maybe"}, "outcome"),
        ({"project": "x" * 200}, "project"),
        ({"details": {"password": "hunter2"}}, "secret"),
        ({"details": {"weights": b"\x00"}}, "bytes"),
    ]
    for change, name in cases:
        with pytest.raises(ConfigError, match=name):
            log.append(**event(**change))
    assert _count(db_url) == 0


def test_a_closed_log_refuses_events(make_log: Callable[..., AuditLog]) -> None:
    log = make_log()
    log.close()
    log.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        log.append(**event())


def test_a_failed_commit_is_reported_to_the_caller(
    signing_key: SigningKey, tmp_path: object
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/no-schema.db")
    log = AuditLog(engine=engine, signing_key=signing_key)
    try:
        with pytest.raises(StorageError, match="Could not commit 1 audit event"):
            log.append(**event())
    finally:
        log.close()
        engine.dispose()


def test_a_damaged_log_is_not_extended(make_log: Callable[..., AuditLog], engine: Engine) -> None:
    for i in range(6):
        make_log(checkpoint_every=100).append(**event(details={"i": i}))
    drop_triggers(engine)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE seq = 3"))
    with pytest.raises(IntegrityError, match="event 3 is missing"):
        make_log().append(**event())


@pytest.mark.parametrize(
    "options",
    [{"checkpoint_every": 0}, {"max_batch": 0}, {"checkpoint_interval": 0}],
)
def test_bad_writer_settings_are_clear_errors(
    engine: Engine, signing_key: SigningKey, options: dict[str, float]
) -> None:
    with pytest.raises(ConfigError, match="positive"):
        AuditLog(engine=engine, signing_key=signing_key, **options)  # type: ignore[arg-type]


def test_asyncio_callers_await_their_commit(make_log: Callable[..., AuditLog], db_url: str) -> None:
    log = make_log()

    async def main() -> list[int]:
        receipts = await asyncio.gather(
            *(log.append_async(**event(details={"i": i})) for i in range(50))
        )
        return [r.seq for r in receipts]

    assert sorted(asyncio.run(main())) == list(range(1, 51))
    assert _count(db_url) == 50

    async def bad() -> None:
        await log.append_async(**event(outcome="perhaps"))

    with pytest.raises(ConfigError, match="outcome"):
        asyncio.run(bad())
