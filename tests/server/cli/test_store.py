"""`fedvault models` and `fedvault keys` from a user's shell: good paths and bad input."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from safetensors.numpy import load_file
from sqlmodel import Session
from typer.testing import CliRunner

from fedvault.common.errors import ConfigError, IntegrityError, KeyMaterialError, NotFound
from fedvault.server.core.settings import ServerSettings
from fedvault.server.store.from_settings import open_store
from fedvault.server.store.service import Lineage
from fedvault.server.store.tables import ModelVersion

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables as a wide terminal shows them, so one row stays on one line."""
    import fedvault.server.cli.store as store_cli

    monkeypatch.setattr(store_cli, "console", Console(width=200))


def _cli(*args: str):  # type: ignore[no-untyped-def]
    from fedvault.common.cli import build_app

    return runner.invoke(build_app(), list(args), terminal_width=200)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    assert _cli("keys", "init", "--data-dir", str(path)).exit_code == 0
    store = open_store(ServerSettings(data_dir=path))
    weights = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    lineage = Lineage(
        run_id="run-7",
        round=3,
        sites=[{"site": "bank-a", "epsilon": 2.5, "delta": 1e-5, "rounds": [1, 2, 3], "steps": 9}],
        dp={"target-epsilon": 3.0},
        metrics={"accuracy": 0.875},
    )
    store.put_arrays("credit-mlp", weights, lineage=lineage, creator="run-7")
    store.put_arrays("credit-mlp", weights, lineage=lineage, creator="run-7")
    return path


def test_init_makes_private_data_dir_and_keyring(tmp_path: Path) -> None:
    path = tmp_path / "fresh"
    result = _cli("keys", "init", "--data-dir", str(path))
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert stat.S_IMODE((path / "keyring.json").stat().st_mode) == 0o600
    assert _cli("keys", "init", "--data-dir", str(path)).exit_code == 0, "init is idempotent"


def test_list_and_show_give_lineage_and_privacy(data_dir: Path) -> None:
    listed = _cli("models", "list", "--data-dir", str(data_dir))
    assert listed.exit_code == 0
    assert "credit-mlp" in listed.output and "credit-mlp:2" in listed.output
    assert "87.5%" in listed.output and "2.500" in listed.output
    shown = _cli("models", "show", "credit-mlp:1", "--data-dir", str(data_dir))
    assert shown.exit_code == 0
    for text in ("credit-mlp:1", "run run-7, round 3", "bank-a", "2.500", "accuracy 0.875"):
        assert text in shown.output
    as_json = _cli("models", "show", "credit-mlp", "--json", "--data-dir", str(data_dir))
    record = json.loads(as_json.output)
    assert record["version"] == 2 and "wrapped_key" not in record and "blob" not in record


def test_pull_writes_a_loadable_owner_only_file(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.safetensors"
    result = _cli("models", "pull", "credit-mlp:2", "-o", str(out), "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert np.array_equal(load_file(str(out))["w"], np.arange(6, dtype=np.float32).reshape(2, 3))
    again = _cli("models", "pull", "credit-mlp", "-o", str(out), "--data-dir", str(data_dir))
    assert isinstance(again.exception, ConfigError) and "--force" in str(again.exception)


def test_pull_of_a_tampered_version_leaves_no_file(data_dir: Path, tmp_path: Path) -> None:
    blob = next((data_dir / "blobs" / "credit-mlp").glob("v1-*.fvb"))
    raw = bytearray(blob.read_bytes())
    raw[-5] ^= 0xFF
    blob.write_bytes(bytes(raw))
    out = tmp_path / "m.safetensors"
    result = _cli("models", "pull", "credit-mlp:1", "-o", str(out), "--data-dir", str(data_dir))
    assert isinstance(result.exception, IntegrityError)
    assert "credit-mlp" in str(result.exception)
    assert not out.exists()


def test_rotate_status_and_retire(data_dir: Path) -> None:
    rotated = _cli("keys", "rotate", "--data-dir", str(data_dir))
    assert rotated.exit_code == 0 and "re-wrapped 2" in rotated.output
    status = _cli("keys", "status", "--data-dir", str(data_dir))
    lines = [ln for ln in status.output.splitlines() if "│" in ln]
    assert any(" 2 " in ln and "current" in ln and " 2 " in ln for ln in lines)
    assert _cli("keys", "retire", "1", "--data-dir", str(data_dir)).exit_code == 0
    assert "retired" in _cli("keys", "status", "--data-dir", str(data_dir)).output
    refused = _cli("keys", "retire", "2", "--data-dir", str(data_dir))
    assert isinstance(refused.exception, KeyMaterialError)
    out = io.BytesIO()
    for chunk in open_store(ServerSettings(data_dir=data_dir)).read("credit-mlp", 1):
        out.write(chunk)
    assert out.getvalue()


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["models", "show", "nope"], NotFound),
        (["models", "show", "credit-mlp:9"], NotFound),
        (["models", "show", "credit-mlp:zero"], ConfigError),
        (["models", "show", "../../etc"], ConfigError),
    ],
)
def test_bad_refs_are_clear_errors(data_dir: Path, args: list[str], error: type) -> None:
    result = _cli(*args, "--data-dir", str(data_dir))
    assert isinstance(result.exception, error), result.output


def test_errors_reach_the_user_as_a_message_without_a_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from fedvault.common.cli import main; main()",
            "models",
            "list",
            "--data-dir",
            str(tmp_path / "missing"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "300"},
    )
    assert proc.returncode == 1
    assert "does not exist" in proc.stderr and "keys init" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_clean_up_clears_what_a_dead_writer_left_and_unblocks_retirement(data_dir: Path) -> None:
    """A version left `writing` (its writer killed) blocks KEK retirement until
    `models clean-up` clears it; finished versions stay readable and a younger unfinished
    write is left alone."""
    store = open_store(ServerSettings(data_dir=data_dir))
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    with Session(store.engine) as session:
        session.add(
            ModelVersion(model_id="credit-mlp", version=3, created_by="run-8", created_at=long_ago)
        )
        session.commit()
    stray = store.blob_dir / "credit-mlp" / ".v3-0badc0de.fvb.abcd.tmp"
    stray.write_bytes(b"half-written ciphertext")
    os.utime(stray, (long_ago.timestamp(), long_ago.timestamp()))
    assert _cli("keys", "rotate", "--data-dir", str(data_dir)).exit_code == 0
    refused = _cli("keys", "retire", "1", "--data-dir", str(data_dir))
    assert isinstance(refused.exception, KeyMaterialError)
    assert "fedvault models clean-up" in str(refused.exception)

    cleaned = _cli("models", "clean-up", "--data-dir", str(data_dir))
    assert cleaned.exit_code == 0, cleaned.output
    assert "credit-mlp:3" in cleaned.output and stray.name in cleaned.output
    assert not stray.exists()
    assert _cli("keys", "retire", "1", "--data-dir", str(data_dir)).exit_code == 0
    assert [v.version for v in store.versions("credit-mlp")] == [1, 2]
    again = _cli("models", "clean-up", "--data-dir", str(data_dir))
    assert again.exit_code == 0 and "Nothing to clean up" in again.output


def test_clean_up_refuses_a_negative_age(data_dir: Path) -> None:
    answer = _cli("models", "clean-up", "--older-than-minutes", "-5", "--data-dir", str(data_dir))
    assert answer.exit_code == 2 and "-5" in answer.output
