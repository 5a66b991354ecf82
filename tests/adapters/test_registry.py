"""The registry on a real SQLite file and a real PostgreSQL database: versions, aliases, audit
log, all-or-nothing."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import literal

from adapters import registry as registry_module
from adapters.registry import InUse, NotFound, Registry, RegistryError
from adapters.validation import AdapterInfo
from gateway.db import create_db_engine


@pytest.fixture
def registry(database_url: str) -> Registry:
    return Registry(create_db_engine(database_url))


def info(tmp_path: Path) -> AdapterInfo:
    return AdapterInfo(
        path=tmp_path,
        rank=8,
        alpha=16,
        target_modules=["q_proj"],
        base_model="smollm2-135m-instruct",
    )


def test_versions_count_up_and_are_never_reused(registry: Registry, tmp_path: Path) -> None:
    first = registry.register("extract", info(tmp_path), dataset_hash="sha256:ab")
    second = registry.register("extract", info(tmp_path))
    assert (first.served_name, second.served_name) == ("extract@v1", "extract@v2")
    assert first.dataset_hash == "sha256:ab"
    registry.delete("extract@v2")
    assert registry.register("extract", info(tmp_path)).served_name == "extract@v3"
    assert [a.served_name for a in registry.adapters()] == ["extract@v1", "extract@v3"]
    assert registry.get("extract@v2").status == "deleted", "kept for lineage"


def test_alias_flip_remembers_previous_and_rolls_back(registry: Registry, tmp_path: Path) -> None:
    for _ in range(2):
        registry.register("extract", info(tmp_path))
    registry.set_alias("extract", {"extract@v1": 100})
    flipped = registry.set_alias("extract", {"extract@v2": 100})
    assert flipped.previous_targets == {"extract@v1": 100}
    again = registry.set_alias("extract", {"extract@v2": 100})
    assert again.previous_targets == {"extract@v1": 100}, "repeating a PUT changes nothing"
    back = registry.rollback_alias("extract")
    assert back.targets == {"extract@v1": 100} and back.previous_targets == {"extract@v2": 100}
    kinds = [e.kind for e in registry.events()]
    assert kinds[:3] == ["alias_rollback", "alias_set", "alias_set"]


def test_refusals_write_nothing(registry: Registry, tmp_path: Path) -> None:
    registry.register("extract", info(tmp_path))
    before = registry.events()
    with pytest.raises(RegistryError, match="sum to 100"):
        registry.set_alias("extract", {"extract@v1": 60})
    with pytest.raises(NotFound):
        registry.set_alias("extract", {"extract@v9": 100})
    with pytest.raises(RegistryError, match="bad_name|lowercase"):
        registry.register("Bad Name", info(tmp_path))
    assert registry.events() == before
    assert registry.aliases() == []


def test_delete_refused_while_an_alias_points_at_it(registry: Registry, tmp_path: Path) -> None:
    registry.register("extract", info(tmp_path))
    registry.set_alias("extract", {"extract@v1": 100})
    with pytest.raises(InUse, match="alias extract"):
        registry.delete("extract@v1")
    assert registry.get("extract@v1").status == "registered"


def test_a_rejected_version_stays_listed_and_never_becomes_a_target_again(
    registry: Registry, tmp_path: Path
) -> None:
    registry.register("extract", info(tmp_path))
    registry.register("extract", info(tmp_path))
    registry.set_alias("extract", {"extract@v2": 100})
    registry.set_alias("extract", {"extract@v1": 100})  # previous targets: v2
    rejected = registry.delete("extract@v2", status="rejected")
    assert rejected.status == "rejected"
    assert {a.served_name: a.status for a in registry.adapters()}["extract@v2"] == "rejected"
    with pytest.raises(RegistryError, match="rejected and cannot be a target"):
        registry.set_alias("extract", {"extract@v2": 100})
    with pytest.raises(RegistryError, match="has been rejected"):
        registry.rollback_alias("extract")
    with pytest.raises(RegistryError, match="retired as one of"):
        registry.delete("extract@v1", status="gone")
    assert registry.alias("extract").targets == {"extract@v1": 100}
    assert "adapter_rejected" in [e.kind for e in registry.events()]


def test_two_registries_racing_for_a_version_get_a_clear_conflict(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two gateways on one database: the loser of a version number is told, nothing half-done."""
    engine = create_db_engine(database_url)
    first, second = Registry(engine), Registry(engine)
    first.register("extract", info(tmp_path))
    # The race: the second read the last version before the first committed (it saw none).
    monkeypatch.setattr(registry_module, "func", SimpleNamespace(max=lambda _column: literal(0)))
    with pytest.raises(InUse) as caught:
        second.register("extract", info(tmp_path))
    assert caught.value.reason == "version_conflict"
    assert [a.served_name for a in first.adapters()] == ["extract@v1"]
    assert [e.kind for e in first.events()] == ["adapter_registered"], "no event for the loser"
