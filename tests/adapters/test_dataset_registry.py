"""The dataset registry on a real database (SQLite, PostgreSQL) and real JSONL files: versions,
lineage, the frozen test set, idempotence and all-or-nothing writes."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from sqlalchemy import MetaData, event

from adapters import dataset_registry as dataset_registry_module
from adapters.curation import Candidate, CurationConfig, input_key, version_hash
from adapters.dataset_registry import (
    DatasetRegistry,
    DatasetRegistryError,
    candidates_from_file,
)
from adapters.datasets import load_conversations
from adapters.registry import RegistryError
from gateway.db import create_db_engine

EXTRACT = Path(__file__).resolve().parents[2] / "examples" / "extract.jsonl"
SYSTEM = "Extract the person's name, age and city from the text. Answer with JSON only."
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")


def chat(user: str, answer: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": user},
        {"role": "assistant", "content": answer},
    ]


def scrub(text: str) -> str:
    return EMAIL.sub("<EMAIL>", text)


@pytest.fixture
def datasets(tmp_path: Path, database_url: str) -> DatasetRegistry:
    return DatasetRegistry(create_db_engine(database_url), tmp_path / "datasets")


@pytest.fixture
def examples() -> list[Candidate]:
    return candidates_from_file(EXTRACT)


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_first_import_freezes_a_test_set_and_writes_a_trainable_file(
    datasets: DatasetRegistry, examples: list[Candidate]
) -> None:
    version, removals = datasets.import_examples("extract", examples)
    assert (version.alias, version.version, version.parents) == ("extract", 1, [])
    assert version.sources == ["extract.jsonl"]
    assert version.counts["candidates"] == 64 and version.counts["frozen"] == 10
    frozen = datasets.frozen("extract")
    assert len(frozen) == 10 and datasets.frozen_set("extract").origin == "split"
    assert version.counts["kept"] == 64 - 10 - version.counts["frozen_leaks"]
    assert len(removals) == 64 - version.counts["kept"]

    path = Path(version.path)
    trained_on = load_conversations(path)  # what the trainer reads: extra keys ignored
    assert trained_on == datasets.conversations("extract", 1)
    assert version.hash == version_hash(trained_on)
    assert path.name == version.hash.removeprefix("sha256:") + ".jsonl"
    report = json.loads(path.with_name(path.stem + ".removals.json").read_text())
    assert report["hash"] == version.hash and report["counts"] == version.counts
    assert {r["reason"] for r in report["removals"]} <= {"frozen", "frozen_leak_near"}
    assert not {input_key(c) for c in frozen} & {input_key(c) for c in trained_on}


def test_the_frozen_set_never_changes_and_never_leaks(
    datasets: DatasetRegistry, examples: list[Candidate]
) -> None:
    first, _ = datasets.import_examples("extract", examples[:40])
    frozen = datasets.frozen("extract")
    frozen_keys = {input_key(c) for c in frozen}
    # The whole file again, frozen examples included: they are refused, the set stays.
    second, removals = datasets.import_examples("extract", examples, parents=[first.hash])
    assert datasets.frozen("extract") == frozen
    leaked = [r for r in removals if r.reason == "frozen_leak_exact"]
    assert len(leaked) == len(frozen) and second.counts["frozen"] == 0
    assert second.counts["frozen_leaks"] >= len(frozen)
    for version in datasets.versions("extract"):
        keys = {input_key(c) for c in datasets.conversations("extract", version.version)}
        assert not keys & frozen_keys, f"v{version.version} holds a frozen input"
    with pytest.raises(DatasetRegistryError) as caught:
        datasets.freeze("extract", [chat("Ana is 30 and lives in Rome.", "{}")])
    assert caught.value.reason == "frozen_exists"
    assert datasets.frozen("extract") == frozen


def test_an_explicit_frozen_set_is_used_and_refused_twice(
    datasets: DatasetRegistry, examples: list[Candidate]
) -> None:
    chosen = [c.conversation for c in examples[:5]]
    assert datasets.freeze("extract", chosen + chosen[:1]) == 5, "duplicates stored once"
    with pytest.raises(DatasetRegistryError) as caught:
        datasets.freeze("extract", chosen)
    assert caught.value.reason == "frozen_exists" and isinstance(caught.value, RegistryError)
    paraphrase = Candidate(chat("Dana is 42 years old and she lives in Madrid.", "{}"), "x")
    version, removals = datasets.import_examples("extract", [*examples, paraphrase])
    assert version.counts["frozen"] == 0, "no split when the alias already has a frozen set"
    assert datasets.frozen("extract") == chosen
    assert datasets.frozen_set("extract").origin == "explicit"
    reasons = {r.index: r.reason for r in removals}
    assert all(reasons[i] == "frozen_leak_exact" for i in range(5))
    assert reasons[64] == "frozen_leak_near"


def test_reimport_is_idempotent_whatever_the_order(
    datasets: DatasetRegistry, examples: list[Candidate]
) -> None:
    first, _ = datasets.import_examples("extract", examples)
    kept = datasets.candidates_of("extract", 1)
    shuffled = list(kept)
    random.Random(3).shuffle(shuffled)
    again, removals = datasets.import_examples("extract", shuffled, parents=[first.hash])
    assert again == first and removals == []
    assert [v.version for v in datasets.versions()] == [1]
    twice, _ = datasets.import_examples("extract", examples)
    assert twice == first


def test_lineage_merges_feedback_and_diffs(
    datasets: DatasetRegistry, examples: list[Candidate]
) -> None:
    first, _ = datasets.import_examples("extract", examples)
    old = datasets.candidates_of("extract", 1)
    assert {c.source for c in old} == {"extract.jsonl"}
    target = old[0].conversation
    corrected = [*target[:-1], {"role": "assistant", "content": '{"corrected": true}'}]
    new = [
        Candidate(corrected, "feedback:req-1"),
        Candidate(
            chat("Ana is 30 years old and works as a nurse in Rome.", "{}"), "feedback:req-2"
        ),
    ]
    second, removals = datasets.import_examples("extract", old[1:-1] + new, parents=[first.hash])
    assert second.version == 2 and second.parents == [first.hash]
    assert second.sources == ["extract.jsonl", "feedback:req-1", "feedback:req-2"]
    assert second.counts["kept"] == first.counts["kept"] and removals == []
    sources = {c.source for c in datasets.candidates_of("extract", 2)}
    assert sources == {"extract.jsonl", "feedback:req-1", "feedback:req-2"}

    # A later version keeps the correction over the original answer it contradicts.
    third, removals = datasets.import_examples(
        "extract", [*datasets.candidates_of("extract", 2), old[0]], parents=[second.hash]
    )
    assert third.hash == second.hash and third.version == 2, "nothing new survived"
    assert [r.reason for r in removals] == ["contradiction"]

    diff = datasets.diff("extract", 1, 2)
    assert (diff["added"], diff["removed"], diff["changed"]) == (1, 1, 1)
    assert diff["unchanged"] == first.counts["kept"] - 2
    assert diff["changed_examples"][0]["after"] == '{"corrected": true}'
    assert diff["removed_examples"] == [old[-1].conversation]

    with pytest.raises(DatasetRegistryError) as caught:
        datasets.import_examples("extract", new, parents=["sha256:" + "0" * 64])
    assert caught.value.reason == "unknown_parent"
    assert datasets.latest("extract") == second


def test_pii_is_scrubbed_before_hashing_and_never_stored(
    datasets: DatasetRegistry, examples: list[Candidate], database_url: str, tmp_path: Path
) -> None:
    with_pii = [
        Candidate(chat(f"Mail dana{i}@example.com: Dana is {i} and lives in Madrid.", "{}"), "f")
        for i in range(20, 30)
    ]
    version, _ = datasets.import_examples("extract", [*examples, *with_pii], scrub=scrub)
    kept = datasets.conversations("extract", 1)
    assert version.hash == version_hash(kept)
    assert any("<EMAIL>" in c[1]["content"] for c in kept + datasets.frozen("extract"))
    stored = b"".join(
        p.read_bytes() for p in [*(tmp_path / "datasets").rglob("*"), *tmp_path.glob("*.db*")]
        if p.is_file()
    )  # fmt: skip
    assert b"@example.com" not in stored, "an address reached a file or the database"
    engine = create_db_engine(database_url)  # every row, on any database
    tables = MetaData()
    tables.reflect(engine)
    with engine.connect() as connection:
        rows = [repr(row) for table in tables.sorted_tables
                for row in connection.execute(table.select())]  # fmt: skip
    engine.dispose()
    assert rows and not any("@example.com" in row for row in rows)


def test_a_failed_commit_leaves_no_row_no_file_and_no_frozen_set(
    datasets: DatasetRegistry, examples: list[Candidate], tmp_path: Path
) -> None:
    def refuse(_session: object) -> None:
        raise RuntimeError("database went away")

    event.listen(datasets._sessions, "before_commit", refuse)
    with pytest.raises(RuntimeError, match="went away"):
        datasets.import_examples("extract", examples)
    event.remove(datasets._sessions, "before_commit", refuse)
    assert datasets.versions() == [] and datasets.frozen("extract") == []
    assert files_under(tmp_path / "datasets") == []

    version, _ = datasets.import_examples("extract", examples)  # a retry works
    assert version.version == 1 and len(datasets.frozen("extract")) == 10


def test_a_failed_file_write_leaves_no_row_and_no_file(
    datasets: DatasetRegistry,
    examples: list[Candidate],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = dataset_registry_module._write_atomic
    calls: list[Path] = []

    def disk_full_on_the_report(path: Path, text: str) -> None:
        calls.append(path)
        if path.name.endswith(".removals.json"):
            raise OSError(28, "No space left on device")
        real(path, text)

    monkeypatch.setattr(dataset_registry_module, "_write_atomic", disk_full_on_the_report)
    with pytest.raises(OSError, match="No space"):
        datasets.import_examples("extract", examples)
    assert len(calls) == 2, "the data file was written, then the report failed"
    assert datasets.versions() == [] and datasets.frozen("extract") == []
    assert files_under(tmp_path / "datasets") == []


def test_refusals_and_lookups(datasets: DatasetRegistry, examples: list[Candidate]) -> None:
    with pytest.raises(DatasetRegistryError) as caught:
        datasets.import_examples("extract", examples[:1])
    assert caught.value.reason == "empty_dataset", "one example is all frozen, none left"
    assert datasets.frozen("extract") == [] and datasets.versions() == []
    with pytest.raises(RegistryError) as bad:
        datasets.import_examples("Bad Name", examples)
    assert bad.value.reason == "bad_name"
    with pytest.raises(DatasetRegistryError) as missing:
        datasets.get("extract", 1)
    assert missing.value.reason == "not_found"
    assert datasets.latest("extract") is None

    datasets.import_examples("extract", examples[:20])
    datasets.import_examples("prose", examples[20:40])
    assert [(v.alias, v.version) for v in datasets.versions()] == [("extract", 1), ("prose", 1)]
    assert datasets.get("prose", 1).sources == ["extract.jsonl"]


def test_a_tampered_file_is_detected(datasets: DatasetRegistry, examples: list[Candidate]) -> None:
    version, _ = datasets.import_examples("extract", examples)
    path = Path(version.path)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(DatasetRegistryError) as caught:
        datasets.conversations("extract", 1)
    assert caught.value.reason == "corrupt"


def test_a_stricter_config_changes_the_split(
    tmp_path: Path, database_url: str, examples: list[Candidate]
) -> None:
    engine = create_db_engine(database_url)
    config = CurationConfig(frozen_fraction=0.2, seed=5)
    datasets = DatasetRegistry(engine, tmp_path / "datasets", config=config)
    version, _ = datasets.import_examples("extract", examples)
    assert version.counts["frozen"] == round(64 * 0.2) == len(datasets.frozen("extract"))
