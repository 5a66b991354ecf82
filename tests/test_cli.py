"""The command line explains itself and refuses bad configuration clearly."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from gateway.cli import app

runner = CliRunner()


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "serve" in result.output and "model" in result.output


def test_serve_help_explains_upstreams_and_env() -> None:
    result = runner.invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    assert "--upstream" in result.output and "TUNELOOP_UPSTREAMS" in result.output


def test_bad_env_configuration_is_refused_before_anything_starts() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve"],
        env={"TUNELOOP_UPSTREAMS": "not-a-url", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "not an http(s) URL" in result.stderr
