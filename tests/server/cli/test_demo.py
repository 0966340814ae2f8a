"""`fedvault` and `fedvault demo` speak to a user: help, option checks, no tracebacks."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from fedvault.common.cli import build_app

runner = CliRunner()


def test_root_help_lists_demo():
    result = runner.invoke(build_app(), ["--help"])
    assert result.exit_code == 0
    assert "demo" in result.output


def test_demo_help_documents_every_option():
    result = runner.invoke(build_app(), ["demo", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for option in (
        "--sites",
        "--rounds",
        "--dataset",
        "--target-epsilon",
        "--noise-multiplier",
        "--non-iid",
        "--seed",
    ):
        assert option in result.output


def test_conflicting_privacy_options_are_refused_before_anything_starts(tmp_path):
    result = runner.invoke(
        build_app(),
        ["demo", "--target-epsilon", "3", "--noise-multiplier", "1.1", "--workdir", str(tmp_path)],
    )
    assert result.exit_code == 2
    assert "not both" in result.output
    assert not any(tmp_path.iterdir())  # no workspace, no process


def test_invalid_value_is_a_one_line_error_not_a_traceback(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from fedvault.common.cli import main; main()",
            "demo",
            "--noise-multiplier",
            "-1",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "noise-multiplier must be a positive number" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_unknown_dataset_is_refused():
    result = runner.invoke(build_app(), ["demo", "--dataset", "imagenet"])
    assert result.exit_code == 2
