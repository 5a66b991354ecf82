"""Docs that tests keep true: every setting is in the README's configuration table."""

from __future__ import annotations

from gateway.settings import Settings
from tests.helpers import ROOT


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [
        f"TUNELOOP_{name.upper()}"
        for name in Settings.model_fields
        if f"`TUNELOOP_{name.upper()}`" not in readme
    ]
    assert not missing, f"README configuration table lacks: {missing}"


def test_readme_shows_the_two_commands_first() -> None:
    readme = (ROOT / "README.md").read_text()
    assert readme.index("make run") < readme.index("make test") < readme.index("## Configuration")
