"""Curation as pure functions: dedupe, contradictions, the leak guard, the frozen split, hashes."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from adapters.curation import (
    Candidate,
    CurationConfig,
    LeakGuard,
    curate,
    curate_and_freeze,
    input_key,
    normalise,
    output_of,
    split_frozen,
    version_hash,
)
from adapters.datasets import load_conversations

EXTRACT = Path(__file__).resolve().parents[2] / "examples" / "extract.jsonl"
SYSTEM = "Extract the person's name, age and city from the text. Answer with JSON only."
CONFIG = CurationConfig()
LONG_TEXT = (
    "Our quarterly planning meeting covered the migration of the billing service to the new "
    "cluster, the hiring plan for the support team in the spring, the budget review that "
    "finance asked for before the end of the month, and the incident from last Tuesday when "
    "the payment queue stalled for forty minutes because a certificate expired overnight."
)


def chat(user: str, answer: str, *, system: str = SYSTEM) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": user},
        {"role": "assistant", "content": answer},
    ]


def file_candidates() -> list[Candidate]:
    return [Candidate(c, "extract.jsonl") for c in load_conversations(EXTRACT)]


def reasons(curated) -> dict[int, str]:
    return {removal.index: removal.reason for removal in curated.removals}


def test_normalise_trims_lowercases_and_keys_ignore_the_answer() -> None:
    messy = [
        {"role": " User ", "content": "  Dana is 42.\n", "name": "x"},
        {"role": "ASSISTANT", "content": " {} "},
    ]
    assert normalise(messy) == [
        {"role": "user", "content": "Dana is 42."},
        {"role": "assistant", "content": "{}"},
    ]
    assert input_key(messy) == input_key(chat("Dana is 42.", "other", system="")[1:])
    assert output_of(messy) == "{}"
    with pytest.raises(ValueError, match="no assistant"):
        normalise([{"role": "user", "content": "hi"}])
    with pytest.raises(ValueError, match="unknown role"):
        normalise([{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}])


def test_version_hash_is_order_independent_and_follows_content() -> None:
    conversations = load_conversations(EXTRACT)
    digest = version_hash(conversations)
    assert digest.startswith("sha256:") and len(digest) == len("sha256:") + 64
    assert version_hash(list(reversed(conversations))) == digest
    spaced = [[{**m, "content": f"  {m['content']} "} for m in c] for c in conversations]
    assert version_hash(spaced) == digest, "the hash is over normalised examples"
    changed = [chat("Dana is 43 years old and lives in Madrid.", "{}"), *conversations[1:]]
    assert version_hash(changed) != digest


def test_the_example_file_survives_curation_whole() -> None:
    curated = curate(file_candidates(), config=CONFIG)
    assert len(curated.kept) == 64 and curated.removals == [], "no false near duplicates"
    assert curated.kept_indices == list(range(64))


def test_exact_duplicates_keep_the_first_occurrence() -> None:
    candidates = file_candidates()[:5]
    again = Candidate(
        [{**m, "content": m["content"] + "  "} for m in candidates[1].conversation], "b.jsonl"
    )
    curated = curate([*candidates, again], config=CONFIG)
    assert reasons(curated) == {5: "duplicate_of:1"}
    assert curated.removals[0].source == "b.jsonl"
    assert curated.counts()["duplicates"] == 1 and curated.counts()["kept"] == 5


def test_a_one_word_edit_of_a_long_example_is_a_near_duplicate() -> None:
    answer = "billing, hiring, budget, incident"
    original = chat(LONG_TEXT, answer, system="List the topics.")
    edited = chat(LONG_TEXT.replace("forty", "fifty"), answer, system="List the topics.")
    candidates = [
        *file_candidates()[:3],
        Candidate(original, "a"),
        Candidate(edited, "b"),
        Candidate(chat("Bruno (65) moved to Toronto last spring.", "{}"), "c"),
    ]
    curated = curate(candidates, config=CONFIG)
    assert reasons(curated) == {4: "near_duplicate_of:3"}
    assert curated.counts()["near_duplicates"] == 1
    strict = curate(candidates, config=CurationConfig(near_duplicate_threshold=0.99))
    assert reasons(strict) == {}, "the threshold is configurable"


def test_contradictions_drop_every_example_of_the_input() -> None:
    question = "Dana is 42 years old and lives in Madrid."
    candidates = [
        Candidate(chat(question, '{"name": "Dana", "age": 42, "city": "Madrid"}'), "a.jsonl"),
        Candidate(chat("Chen is 54 years old and lives in Quito.", "{}"), "a.jsonl"),
        Candidate(chat(question, '{"name": "Dana", "age": 24, "city": "Madrid"}'), "b.jsonl"),
    ]
    curated = curate(candidates, config=CONFIG)
    assert reasons(curated) == {0: "contradiction", 2: "contradiction"}
    assert [c.source for c in curated.kept] == ["a.jsonl"]
    assert curated.counts()["contradictions"] == 2


def test_a_human_correction_wins_a_contradiction() -> None:
    question = "Dana is 42 years old and lives in Madrid."
    wrong = '{"name": "Dana", "age": 24, "city": "Madrid"}'
    right = '{"name": "Dana", "age": 42, "city": "Madrid"}'
    curated = curate(
        [
            Candidate(chat(question, wrong), "a.jsonl"),
            Candidate(chat(question, right), "feedback:r1"),
        ],
        config=CONFIG,
    )
    assert reasons(curated) == {0: "contradiction"}
    assert [output_of(c.conversation) for c in curated.kept] == [right]
    assert "human correction" in curated.removals[0].note

    # A correction a word away from a long wrong answer is not mistaken for a near copy of it.
    long_wrong = chat(LONG_TEXT, LONG_TEXT, system="Repeat the text.")
    long_right = chat(LONG_TEXT, LONG_TEXT.replace("forty", "fifty"), system="Repeat the text.")
    corrected = curate(
        [Candidate(long_wrong, "a.jsonl"), Candidate(long_right, "feedback:r1")], config=CONFIG
    )
    assert reasons(corrected) == {0: "contradiction"}

    # A correction that only confirms one file answer makes that answer win, even though the
    # correction itself is then dropped as a duplicate of it.
    confirmed = curate(
        [
            Candidate(chat(question, right), "a.jsonl"),
            Candidate(chat(question, wrong), "b.jsonl"),
            Candidate(chat(question, right), "feedback:r2"),
        ],
        config=CONFIG,
    )
    assert reasons(confirmed) == {1: "contradiction", 2: "duplicate_of:0"}

    # Two humans who disagree settle nothing: the input is dropped whole.
    disputed = curate(
        [
            Candidate(chat(question, wrong), "a.jsonl"),
            Candidate(chat(question, right), "feedback:r1"),
            Candidate(chat(question, right.replace("Madrid", "Lima")), "feedback:r2"),
        ],
        config=CONFIG,
    )
    assert disputed.kept == [] and set(reasons(disputed).values()) == {"contradiction"}


def test_leak_guard_refuses_exact_and_paraphrased_frozen_inputs() -> None:
    frozen = [chat("Our new colleague Emeka is 66 and is based in Oslo.", "{}")]
    guard = LeakGuard(frozen, threshold=0.8)
    exact = chat("  Our new colleague Emeka is 66 and is based in Oslo. ", "another answer")
    assert guard.check(exact) == "frozen_leak_exact"
    paraphrase = chat("Our new colleague Emeka is 66 and works in Oslo.", "{}")
    assert guard.check(paraphrase) == "frozen_leak_near"
    assert guard.check(chat("Bruno (65) moved to Toronto last spring.", "{}")) is None
    assert guard.check(chat("Meet Uma, a 44-year-old from Paris.", "{}")) is None, (
        "the shared system prompt alone does not make inputs alike"
    )
    assert LeakGuard(frozen, threshold=0.95).check(paraphrase) is None


def test_curate_reports_frozen_leaks_and_keeps_the_rest() -> None:
    frozen = [c.conversation for c in file_candidates()[2:4]]
    assert frozen[0][1]["content"] == "Dana is 42 years old and lives in Madrid."
    paraphrased = chat("Dana is 42 years old and she lives in Madrid.", "{}")
    candidates = [*file_candidates()[:6], Candidate(paraphrased, "feedback:r9")]
    curated = curate(candidates, config=CONFIG, frozen=frozen)
    assert reasons(curated) == {
        2: "frozen_leak_exact",
        3: "frozen_leak_exact",
        6: "frozen_leak_near",
    }
    assert curated.counts()["frozen_leaks"] == 3 and len(curated.kept) == 4
    frozen_keys = {input_key(c) for c in frozen}
    assert not frozen_keys & {input_key(c.conversation) for c in curated.kept}


def test_scrub_runs_on_every_content_before_dedupe_and_hashing() -> None:
    seen: list[str] = []

    def scrub(text: str) -> str:
        seen.append(text)
        return re.sub(r"\S+@\S+", "<EMAIL>", text)

    first = chat("Write to dana@example.com: Dana is 42 and lives in Madrid.", "{}")
    second = chat("Write to d.r@mail.org: Dana is 42 and lives in Madrid.", "{}")
    curated = curate([Candidate(first, "a"), Candidate(second, "b")], config=CONFIG, scrub=scrub)
    assert len(seen) == 6, "every message of every example"
    assert reasons(curated) == {1: "duplicate_of:0"}, "identical once scrubbed"
    assert "@" not in str(curated.kept)
    assert version_hash([c.conversation for c in curated.kept]) == version_hash(
        [chat("Write to <EMAIL> Dana is 42 and lives in Madrid.", "{}")]
    )


def test_invalid_examples_are_reported_not_fatal() -> None:
    broken = Candidate([{"role": "user", "content": "no answer"}], "feedback:r3")
    empty = Candidate(chat("hello there", "   "), "feedback:r4")
    curated = curate([broken, *file_candidates()[:2], empty], config=CONFIG)
    assert reasons(curated) == {0: "invalid", 3: "invalid"}
    assert curated.counts()["invalid"] == 2 and len(curated.kept) == 2


def test_frozen_split_is_seeded_order_independent_and_never_empty() -> None:
    conversations = load_conversations(EXTRACT)
    frozen, rest = split_frozen(conversations, fraction=0.15, seed=0)
    assert len(frozen) == 10 and len(rest) == 54
    assert sorted(map(str, frozen + rest)) == sorted(map(str, conversations))
    again, _ = split_frozen(list(reversed(conversations)), fraction=0.15, seed=0)
    assert sorted(map(str, again)) == sorted(map(str, frozen))
    other, _ = split_frozen(conversations, fraction=0.15, seed=1)
    assert sorted(map(str, other)) != sorted(map(str, frozen))
    assert len(split_frozen(conversations[:3], fraction=0.1, seed=0)[0]) == 1


def test_first_curation_freezes_part_and_trains_on_none_of_it() -> None:
    frozen, curated = curate_and_freeze(file_candidates(), config=CONFIG)
    assert len(frozen) == 10
    assert curated.counts()["frozen"] == 10
    frozen_keys = {input_key(c) for c in frozen}
    assert not frozen_keys & {input_key(c.conversation) for c in curated.kept}
    guard = LeakGuard(frozen, threshold=CONFIG.leak_threshold)
    assert all(guard.check(c.conversation) is None for c in curated.kept)
    assert (
        curated.counts()["kept"]
        + sum(v for k, v in curated.counts().items() if k not in ("candidates", "kept"))
        == 64
    )


def test_config_is_validated_and_round_trips(caplog: pytest.LogCaptureFixture) -> None:
    for bad in (
        {"frozen_fraction": 0.3},
        {"frozen_fraction": 0.05},
        {"near_duplicate_threshold": 1.5},
        {"leak_threshold": 0.1},
        {"num_perm": 0},
        {"seed": -1},
    ):
        with pytest.raises(ValidationError):
            CurationConfig(**bad)
    config = CurationConfig(frozen_fraction=0.2, seed=7)
    assert CurationConfig.model_validate(config.model_dump()) == config
    with caplog.at_level(logging.WARNING, logger="tuneloop.curation"):
        assert CurationConfig.model_validate({"seed": 3, "newer_knob": 1}).seed == 3
    assert "newer_knob" in caplog.text
    assert all(field.description for field in CurationConfig.model_fields.values())
