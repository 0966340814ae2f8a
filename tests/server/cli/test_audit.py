"""`fedvault audit ...` and the audited store commands, from a user's shell."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from fedvault.common.errors import ConfigError, IntegrityError, KeyMaterialError, NotFound
from fedvault.server.audit.service import local_actor
from fedvault.server.core.settings import ServerSettings
from fedvault.server.store.from_settings import open_store
from fedvault.server.store.service import Lineage
from tests.server.audit import merkle_reference as ref

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    import fedvault.server.cli._common as common
    import fedvault.server.cli.audit as cli
    import fedvault.server.cli.audit_report as report_cli

    wide = Console(width=250)
    for module in (common, cli, report_cli):
        monkeypatch.setattr(module, "console", wide)


def _cli(*args: str) -> Result:
    from fedvault.common.cli import build_app

    return runner.invoke(build_app(), list(args), terminal_width=250)


def _main(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from fedvault.common.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "250"},
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data dir whose log holds a pull, a failed retire and a rotation."""
    path = tmp_path / "data"
    assert _cli("keys", "init", "--data-dir", str(path)).exit_code == 0
    store = open_store(ServerSettings(data_dir=path))
    weights = {"w": np.arange(4, dtype=np.float32)}
    store.put_arrays("credit-mlp", weights, lineage=Lineage(run_id="run-1"), creator="run-1")
    store.engine.dispose()
    out = tmp_path / "pulled.safetensors"
    assert (
        _cli("models", "pull", "credit-mlp", "-o", str(out), "--data-dir", str(path)).exit_code == 0
    )
    assert isinstance(_cli("keys", "retire", "1", "--data-dir", str(path)).exception, Exception)
    assert _cli("keys", "rotate", "--data-dir", str(path)).exit_code == 0
    return path


def _events(data_dir: Path, *filters: str) -> list[dict[str, object]]:
    result = _cli("audit", "query", "--json", "--data-dir", str(data_dir), *filters)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["events"]  # type: ignore[no-any-return]


def test_help_lists_every_command() -> None:
    result = _cli("audit", "--help")
    assert result.exit_code == 0
    for name in (
        "verify",
        "query",
        "export",
        "prove",
        "consistency",
        "checkpoint",
        "public-key",
        "report",
    ):
        assert name in result.output
    reports = _cli("audit", "report", "--help")
    for name in ("access", "actor", "denied", "privacy", "lineage"):
        assert name in reports.output
    assert "--public-key" in _cli("audit", "verify", "--help").output


def test_store_commands_are_audited_as_the_local_user(data_dir: Path) -> None:
    events = _events(data_dir)
    summary = [(e["action"], e["resource_id"], e["outcome"]) for e in events]
    assert summary == [
        ("model.pull", "credit-mlp:1", "allowed"),
        ("key.retire", "v1", "allowed"),
        ("key.retire", "v1", "failed"),
        ("key.rotate", "v1", "allowed"),
    ]
    assert {(e["actor"], e["actor_type"]) for e in events} == {(local_actor(), "local-user")}
    assert "still wraps" in str(events[2]["details"]["reason"])
    assert len(str(events[0]["details"]["sha256"])) == 64


def test_a_pull_that_fails_is_on_record_as_failed(data_dir: Path, tmp_path: Path) -> None:
    blob = next((data_dir / "blobs" / "credit-mlp").glob("v1-*.fvb"))
    raw = bytearray(blob.read_bytes())
    raw[-3] ^= 0xFF
    blob.write_bytes(bytes(raw))
    out = tmp_path / "again.safetensors"
    result = _cli("models", "pull", "credit-mlp:1", "-o", str(out), "--data-dir", str(data_dir))
    assert isinstance(result.exception, IntegrityError) and not out.exists()
    last = _events(data_dir, "--action", "model.pull")[-2:]
    assert [e["outcome"] for e in last] == ["allowed", "failed"]


def test_no_pull_without_a_usable_audit_key(data_dir: Path, tmp_path: Path) -> None:
    key = data_dir / "audit-signing.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600, "`keys init` made it owner-only"
    out = tmp_path / "x.safetensors"
    os.chmod(key, 0o644)
    result = _cli("models", "pull", "credit-mlp", "-o", str(out), "--data-dir", str(data_dir))
    assert isinstance(result.exception, KeyMaterialError) and not out.exists()
    assert "readable or writable by others" in str(result.exception)
    key.unlink()
    result = _cli("models", "pull", "credit-mlp", "-o", str(out), "--data-dir", str(data_dir))
    assert isinstance(result.exception, KeyMaterialError) and not out.exists()
    assert "Restore it from backup" in str(result.exception), "no silent new identity"


def test_verify_offline_on_a_copy_with_the_exported_key(data_dir: Path, tmp_path: Path) -> None:
    key = tmp_path / "audit.pub"
    exported = _cli("audit", "public-key", "--data-dir", str(data_dir))
    key.write_text(exported.stdout)
    assert "BEGIN PUBLIC KEY" in exported.stdout
    vkey = _cli("audit", "public-key", "--vkey", "--data-dir", str(data_dir)).stdout
    assert vkey.startswith("fedvault-audit+")
    copy = tmp_path / "elsewhere" / "copy.db"
    copy.parent.mkdir()
    # A consistent copy of a live SQLite database (WAL included), as `.backup` makes it.
    with sqlite3.connect(data_dir / "fedvault.db") as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    shutil.rmtree(data_dir)
    ok = _cli("audit", "verify", "--db", f"sqlite:///{copy}", "--public-key", str(key))
    assert ok.exit_code == 0, ok.output
    assert "intact" in ok.output and "4 events" in ok.output

    with sqlite3.connect(copy) as conn:
        conn.execute("DROP TRIGGER audit_events_no_update")
        conn.execute("UPDATE audit_events SET outcome = 'allowed' WHERE seq = 3")
    bad = _main("audit", "verify", "--db", f"sqlite:///{copy}", "--public-key", str(key))
    assert bad.returncode == 1
    assert "event 3 does not match its hash" in bad.stderr
    assert "first bad event: 3" in bad.stderr
    assert "Traceback" not in bad.stdout + bad.stderr


def test_a_saved_checkpoint_reveals_truncation(data_dir: Path, tmp_path: Path) -> None:
    saved = tmp_path / "checkpoint.txt"
    note = _cli("audit", "checkpoint", "--data-dir", str(data_dir)).stdout
    saved.write_text(note)
    assert note.splitlines()[1] == "4"
    with sqlite3.connect(data_dir / "fedvault.db") as conn:
        for table in ("audit_events", "audit_checkpoints"):
            conn.execute(f"DROP TRIGGER {table}_no_delete")
        conn.execute("DELETE FROM audit_events WHERE seq > 2")
        conn.execute("DELETE FROM audit_checkpoints WHERE tree_size > 2")
    assert _cli("audit", "verify", "--data-dir", str(data_dir)).exit_code == 0
    result = _cli("audit", "verify", "--checkpoint", str(saved), "--data-dir", str(data_dir))
    assert isinstance(result.exception, IntegrityError)
    assert "newest events from 3 on were removed" in str(result.exception)


def test_query_filters_and_pages(data_dir: Path) -> None:
    result = _cli("audit", "query", "--outcome", "failed", "--data-dir", str(data_dir))
    assert (
        result.exit_code == 0
        and "key.retire" in result.output
        and "model.pull" not in result.output
    )
    first = _cli("audit", "query", "--limit", "3", "--data-dir", str(data_dir))
    assert "More: --cursor 3" in first.output
    rest = _events(data_dir, "--cursor", "3")
    assert [e["seq"] for e in rest] == [4]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["query", "--since", "yesterday"], "Invalid since"),
        (["query", "--since", "2025-03-01T10:00"], "no timezone"),
        (["query", "--since", "2025-03-02", "--until", "2025-03-01"], "time window is empty"),
        (["query", "--outcome", "maybe"], "Invalid outcome"),
        (["query", "--cursor", "x"], "Invalid cursor"),
        (["query", "--limit", "0"], "Invalid page size"),
        (["export", "--format", "xml"], "Invalid export format"),
        (["prove", "99"], "not covered by the checkpoint"),
        (["consistency", "4", "1"], "older, smaller checkpoint first"),
        (["report", "access", "../etc"], "Invalid model id"),
        (["report", "denied", "--since", "2025-13-01"], "Invalid since"),
    ],
)
def test_bad_input_is_a_clear_error(data_dir: Path, args: list[str], message: str) -> None:
    result = _cli("audit", *args, "--data-dir", str(data_dir))
    assert isinstance(result.exception, ConfigError), result.output
    assert message in str(result.exception)


def test_missing_database_and_missing_lineage(tmp_path: Path, data_dir: Path) -> None:
    result = _cli("audit", "query", "--db", f"sqlite:///{tmp_path}/none.db")
    assert isinstance(result.exception, ConfigError) and "No database at" in str(result.exception)
    missing = _cli("audit", "report", "lineage", "credit-mlp:1", "--data-dir", str(data_dir))
    assert isinstance(missing.exception, NotFound)


def test_export_is_audited_and_streams_jsonl_or_csv(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    result = _cli(
        "audit", "export", "-o", str(out), "--actor", local_actor(), "--data-dir", str(data_dir)
    )
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [e["seq"] for e in lines] == [1, 2, 3, 4, 5], "the export's own event is in it"
    assert lines[-1]["action"] == "audit.export"
    assert lines[-1]["details"]["filter"] == {"actor": local_actor()}
    csv_text = _cli("audit", "export", "--format", "csv", "--data-dir", str(data_dir)).stdout
    assert csv_text.splitlines()[0].startswith("seq,time,actor")
    assert len(csv_text.splitlines()) == 1 + 6
    assert _events(data_dir, "--action", "audit.export")[-1]["details"]["format"] == "csv"


def test_prove_gives_a_proof_that_holds_independently(data_dir: Path) -> None:
    result = _cli("audit", "prove", "2", "--json", "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    proof = json.loads(result.stdout)
    leaf = bytes.fromhex(proof["leaf_hash"])
    path = [bytes.fromhex(p) for p in proof["path"]]
    root = ref.root_from_path(proof["leaf_index"], proof["tree_size"], leaf, path)
    assert root.hex() == proof["root"]
    data = b"\x00" + bytes.fromhex(proof["prev_hash"]) + proof["event_json"].encode()
    assert ref.H(data) == leaf and proof["event"]["seq"] == 2
    plain = _cli("audit", "prove", "2", "--data-dir", str(data_dir))
    assert "Event 2 is in the log" in plain.output
    consistent = _cli("audit", "consistency", "1", "--data-dir", str(data_dir))
    assert consistent.exit_code == 0 and "Consistent" in consistent.output


def test_reports(data_dir: Path) -> None:
    access = _cli("audit", "report", "access", "credit-mlp", "--data-dir", str(data_dir))
    assert (
        access.exit_code == 0 and local_actor() in access.output and "model.pull" in access.output
    )
    actor = _cli("audit", "report", "actor", local_actor(), "--data-dir", str(data_dir))
    assert "key.rotate" in actor.output and "key.retire" in actor.output
    denied = _cli("audit", "report", "denied", "--since", "2000-01-01", "--data-dir", str(data_dir))
    assert denied.exit_code == 0 and "nothing recorded" in denied.output
    privacy = _cli("audit", "report", "privacy", "--data-dir", str(data_dir))
    assert privacy.exit_code == 0 and "nothing recorded" in privacy.output
