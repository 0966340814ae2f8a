"""A writer process killed with SIGKILL loses no event it acknowledged, and the next writer
continues the same verified chain."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from sqlalchemy import text

from fedvault.server.audit import AuditLog, SigningKey, verify_log
from fedvault.server.core.db import open_database
from tests.server.audit.factories import event

WRITER = textwrap.dedent(
    """
    import sys, threading
    from pathlib import Path
    from fedvault.server.audit import AuditLog, SigningKey
    from fedvault.server.core.db import open_database

    url, key_path = sys.argv[1], Path(sys.argv[2])
    log = AuditLog(engine=open_database(url), signing_key=SigningKey.load(key_path),
                   checkpoint_every=64)
    lock = threading.Lock()

    def work(worker):
        n = 0
        while True:
            n += 1
            receipt = log.append(actor=f"w{worker}", actor_type="service", action="test.ack",
                                 resource_type="test", resource_id=str(n), outcome="allowed",
                                 details={"worker": worker, "n": n})
            with lock:  # one whole line per acknowledgement
                sys.stdout.write(f"{receipt.seq} {receipt.hash}\\n")
                sys.stdout.flush()

    for w in range(8):
        threading.Thread(target=work, args=(w,), daemon=True).start()
    threading.Event().wait()
    """
)


def test_sigkill_loses_no_acknowledged_event(db_url: str, tmp_path: Path) -> None:
    key_path = tmp_path / "audit-signing.key"
    key = SigningKey.create(key_path)
    open_database(db_url).dispose()  # migrate before the writer starts
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, db_url, str(key_path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    acked: dict[int, str] = {}
    deadline = time.monotonic() + 120
    try:
        assert proc.stdout is not None
        while len(acked) < 400 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seq, digest = line.split()
            acked[int(seq)] = digest
        os.kill(proc.pid, signal.SIGKILL)
        # Whatever was acknowledged before the kill may still sit in the pipe.
        for line in proc.stdout:
            if line.endswith("\n"):
                seq, digest = line.split()
                acked[int(seq)] = digest
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert len(acked) >= 400, "the writer acknowledged events before it was killed"

    engine = open_database(db_url)
    try:
        with engine.connect() as conn:
            stored = dict(conn.execute(text("SELECT seq, hash FROM audit_events")).all())
        missing = {s for s in acked if stored.get(s) != acked[s]}
        assert not missing, f"acknowledged events lost or changed: {sorted(missing)[:10]}"
        report = verify_log(engine, key.public)
        assert report.ok, report.problem
        assert report.events >= max(acked)

        with AuditLog(engine=engine, signing_key=key) as log:
            log.append(**event())
        report = verify_log(engine, key.public)
        assert report.ok and report.unsigned == 0 and report.events == len(stored) + 1
    finally:
        engine.dispose()
