"""Rubrics: parsing and validation errors with paths, the epoch, every check type, the total."""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
from typing import Any

import numpy as np
import pytest

from eval.checks import CHECK_TYPES
from eval.rubrics import (
    JUDGE_SCHEMA,
    SCORER_VERSION,
    JudgeCall,
    JudgeReply,
    JudgeReplyError,
    Rubric,
    RubricError,
    ScoreInput,
    Scorer,
    ScoreResult,
    evaluator_epoch,
    parse_judge_reply,
    parse_rubric,
)

EXAMPLE = """
description: extraction answers are JSON with name/age/city
checks:
  - type: json_valid
    weight: 2
  - type: json_schema
    schema: {type: object, required: [name, age, city]}
  - type: regex
    name: no_apology
    pattern: "(?i)sorry"
    mode: search
    negate: true
  - type: length
    unit: chars
    max: 400
  - type: llm_judge
    model: smollm2-135m-instruct
    prompt: "Rate 0-10 how well the answer follows the instructions.\\nQ: {question}\\nA: {answer}"
    scale: 10
    threshold: 6
    rate: 0.2
"""

FRANCE = "Paris is the capital of France and its largest city by population."
RIVERS = "The Loire is the longest river flowing entirely within France."


def bag_of_words(texts: list[str]) -> np.ndarray:
    """Deterministic stand-in embedder: hashed word counts, L2-normalised."""
    rows = np.zeros((len(texts), 512))
    for row, text in enumerate(texts):
        for word in re.findall(r"\w+", text.lower()):
            rows[row, int(hashlib.sha256(word.encode()).hexdigest(), 16) % 512] += 1
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms == 0, 1, norms)


def item(answer: str, **fields: Any) -> ScoreInput:
    return ScoreInput(
        sample_id=fields.pop("sample_id", "req-1"),
        question=fields.pop("question", "Who?"),
        answer=answer,
        **fields,
    )


def score(
    checks: list[dict[str, Any]],
    answer: str,
    *,
    scorer: Scorer | None = None,
    allow_judge: bool = True,
    **fields: Any,
) -> ScoreResult:
    rubric = parse_rubric({"checks": checks})
    return asyncio.run(
        (scorer or Scorer()).score(
            rubric, item(answer, **fields), epoch="e", allow_judge=allow_judge
        )
    )


def one(check: dict[str, Any], answer: str, **kwargs: Any) -> tuple[float | None, bool | None]:
    result = score([check], answer, **kwargs).checks[0]
    return result.score, result.passed


# --- parsing --------------------------------------------------------------------------------


def test_example_rubric_parses_with_defaults_filled_in() -> None:
    rubric = parse_rubric(EXAMPLE)
    assert [c.name for c in rubric.checks] == [
        "json_valid", "json_schema", "no_apology", "length", "llm_judge",
    ]  # fmt: skip
    assert [c.weight for c in rubric.checks] == [2, 1, 1, 1, 1]
    assert rubric.judge_models() == ["smollm2-135m-instruct"]
    stored = rubric.as_dict()
    assert stored["checks"][1]["schema"] == {"type": "object", "required": ["name", "age", "city"]}
    assert parse_rubric(stored) == rubric


def test_yaml_and_mapping_give_the_same_rubric() -> None:
    data = {"checks": [{"type": "contains", "value": "Paris", "case_sensitive": False}]}
    text = "checks:\n  - {type: contains, value: Paris, case_sensitive: false}\n"
    assert parse_rubric(text) == parse_rubric(data)


@pytest.mark.parametrize(
    ("source", "path", "words"),
    [
        ({"checks": [{"type": "regex", "pattern": "(unclosed"}]}, "checks[0].pattern", "regular"),
        ({"checks": [{"type": "sentiment"}]}, "checks[0].type", "unknown check type"),
        ({"checks": [{"weight": 1}]}, "checks[0].type", "needs a 'type'"),
        ({"checks": ["json_valid"]}, "checks[0]", "mapping"),
        (
            {"checks": [{"type": "json_valid"}, {"type": "json_schema", "schema": {"type": 3}}]},
            "checks[1].schema",
            "invalid JSON schema",
        ),
        ({"checks": [{"type": "json_schema"}]}, "checks[0].schema", "required"),
        ({"checks": [{"type": "json_valid", "weight": 0}]}, "checks[0].weight", "greater than 0"),
        ({"checks": [{"type": "json_valid", "weight": -2}]}, "checks[0].weight", "greater than 0"),
        ({"checks": [{"type": "length", "min": 10, "max": 5}]}, "checks[0].min", "greater than"),
        ({"checks": [{"type": "length"}]}, "checks[0].max", "min, max"),
        ({"checks": [{"type": "length", "max": 5, "unit": "lines"}]}, "checks[0].unit", "chars"),
        (
            {"checks": [{"type": "json_valid"}, {"type": "json_valid"}]},
            "checks[1].name",
            "used twice",
        ),
        ({"checks": [{"type": "json_valid", "wieght": 2}]}, "checks[0].wieght", "unknown key"),
        ({"checks": [{"type": "json_valid"}], "version": 2}, "version", "unknown key"),
        ({"checks": []}, "checks", "at least 1"),
        ({"description": "no checks"}, "checks", "required"),
        ({"checks": [{"type": "regex", "pattern": "a", "flags": "iq"}]}, "checks[0].flags", "'q'"),
        ({"checks": [{"type": "regex", "pattern": "a", "mode": "all"}]}, "checks[0].mode", ""),
        (
            {"checks": [{"type": "contains_any", "values": ["a", ""]}]},
            "checks[0].values",
            "non-empty",
        ),
        ({"checks": [{"type": "contains", "value": ""}]}, "checks[0].value", "at least 1"),
        ({"checks": [{"type": "grounded", "threshold": 2}]}, "checks[0].threshold", "1"),
        (
            {"checks": [{"type": "llm_judge", "prompt": "Rate it"}]},
            "checks[0].prompt",
            "{answer}",
        ),
        (
            {"checks": [{"type": "llm_judge", "prompt": "Rate {answr}"}]},
            "checks[0].prompt",
            "{answr}",
        ),
        (
            {"checks": [{"type": "llm_judge", "prompt": "{answer}", "threshold": 11}]},
            "checks[0].threshold",
            "above the scale",
        ),
        (
            {"checks": [{"type": "llm_judge", "prompt": "{answer}", "rate": 1.5}]},
            "checks[0].rate",
            "1",
        ),
        ({"checks": [{"type": "json_valid", "name": "has space"}]}, "checks[0].name", "pattern"),
    ],
)
def test_bad_rubrics_name_the_offending_parameter(
    source: dict[str, Any], path: str, words: str
) -> None:
    with pytest.raises(RubricError) as caught:
        parse_rubric(source)
    assert caught.value.path == path
    assert words in caught.value.message
    assert str(caught.value).startswith(f"{path}: ")


def test_further_problems_are_counted_after_the_first() -> None:
    with pytest.raises(RubricError) as caught:
        parse_rubric({"checks": [{"type": "json_valid", "weight": 0}, {"type": "nope"}]})
    assert caught.value.path == "checks[0].weight"
    assert caught.value.message.endswith("(and 1 more problem)")


@pytest.mark.parametrize("text", ["checks: [", "checks:\n  - type: regex\n pattern: x\n", "\t- a"])
def test_broken_yaml_is_a_rubric_error_without_path(text: str) -> None:
    with pytest.raises(RubricError) as caught:
        parse_rubric(text)
    assert caught.value.path is None
    assert "YAML" in caught.value.message


@pytest.mark.parametrize("text", ["", "- json_valid", "just words"])
def test_yaml_that_is_not_a_mapping_is_refused(text: str) -> None:
    with pytest.raises(RubricError) as caught:
        parse_rubric(text)
    assert caught.value.path is None


def test_every_field_of_every_check_has_help_text() -> None:
    missing = [
        f"{kind}.{name}"
        for kind, model in CHECK_TYPES.items()
        for name, field in model.model_fields.items()
        if not field.description
    ]
    assert not missing


# --- epoch ----------------------------------------------------------------------------------


def test_epoch_is_stable_across_key_order_and_spelled_out_defaults() -> None:
    a = parse_rubric(EXAMPLE)
    reordered = {
        "checks": [
            {**dict(reversed(list(check.items()))), "name": check["name"]}
            for check in a.as_dict()["checks"]
        ]
    }
    terse = parse_rubric({"checks": [{"type": "json_valid"}]})
    verbose = parse_rubric({"checks": [{"weight": 1, "name": "json_valid", "type": "json_valid"}]})
    epoch = evaluator_epoch(a)
    assert re.fullmatch(r"[0-9a-f]{16}", epoch)
    assert evaluator_epoch(parse_rubric(reordered)) == epoch
    assert evaluator_epoch(parse_rubric(EXAMPLE)) == epoch
    assert evaluator_epoch(terse) == evaluator_epoch(verbose)


def test_epoch_changes_with_rubric_judge_model_and_scorer_version() -> None:
    base = parse_rubric(EXAMPLE).as_dict()
    epoch = evaluator_epoch(parse_rubric(base))

    heavier = {**base, "checks": [{**base["checks"][0], "weight": 3}, *base["checks"][1:]]}
    other_judge = {**base, "checks": [*base["checks"][:4], {**base["checks"][4], "model": "x"}]}
    assert evaluator_epoch(parse_rubric(heavier)) != epoch
    assert evaluator_epoch(parse_rubric(other_judge)) != epoch
    assert evaluator_epoch(parse_rubric(base), scorer_version=SCORER_VERSION + "x") != epoch
    # The description changes no score, so it does not start a new epoch.
    assert evaluator_epoch(parse_rubric({**base, "description": "reworded"})) == epoch


def test_default_judge_model_counts_only_for_judges_that_name_none() -> None:
    unnamed = parse_rubric({"checks": [{"type": "llm_judge", "prompt": "Rate {answer}"}]})
    no_judge = parse_rubric({"checks": [{"type": "json_valid"}]})
    assert unnamed.judge_models() == []
    assert evaluator_epoch(unnamed, judge_model="a") != evaluator_epoch(unnamed, judge_model="b")
    assert evaluator_epoch(no_judge, judge_model="a") == evaluator_epoch(no_judge, judge_model="b")


# --- text and structured checks -------------------------------------------------------------


@pytest.mark.parametrize(
    ("check", "answer", "expected"),
    [
        ({"type": "json_valid"}, ' {"a": 1} ', (1.0, True)),
        ({"type": "json_valid"}, '```json\n{"a": 1}\n```', (0.0, False)),
        ({"type": "json_valid"}, '{"a": 1', (0.0, False)),
        ({"type": "json_schema", "schema": {"required": ["name"]}}, '{"name": "Ann"}', (1.0, True)),
        ({"type": "json_schema", "schema": {"required": ["name"]}}, '{"age": 3}', (0.0, False)),
        ({"type": "json_schema", "schema": {"type": "object"}}, "not json", (0.0, False)),
        ({"type": "regex", "pattern": r"\d{4}"}, "in 1999 it was", (1.0, True)),
        ({"type": "regex", "pattern": r"\d{4}"}, "long ago", (0.0, False)),
        ({"type": "regex", "pattern": r"\d{4}", "mode": "full"}, "in 1999 it was", (0.0, False)),
        ({"type": "regex", "pattern": r"\d{4}", "mode": "full"}, "1999", (1.0, True)),
        ({"type": "regex", "pattern": "sorry", "negate": True}, "Here it is.", (1.0, True)),
        ({"type": "regex", "pattern": "sorry", "negate": True}, "I am sorry.", (0.0, False)),
        ({"type": "regex", "pattern": "sorry", "flags": "i"}, "SORRY", (1.0, True)),
        ({"type": "regex", "pattern": "sorry"}, "SORRY", (0.0, False)),
        ({"type": "contains", "value": "Paris"}, "It is Paris.", (1.0, True)),
        ({"type": "contains", "value": "Paris"}, "It is paris.", (0.0, False)),
        ({"type": "contains", "value": "Paris", "case_sensitive": False}, "PARIS", (1.0, True)),
        ({"type": "not_contains", "value": "as an AI"}, "It is Paris.", (1.0, True)),
        ({"type": "not_contains", "value": "as an AI"}, "Well, as an AI...", (0.0, False)),
        (
            {"type": "not_contains", "value": "as an ai", "case_sensitive": False},
            "As An AI",
            (0.0, False),
        ),
        ({"type": "contains_any", "values": ["yes", "no"]}, "no, never", (1.0, True)),
        ({"type": "contains_any", "values": ["yes", "no"]}, "maybe", (0.0, False)),
        ({"type": "length", "max": 5}, "12345", (1.0, True)),
        ({"type": "length", "max": 5}, "123456", (0.0, False)),
        ({"type": "length", "min": 3}, "ab", (0.0, False)),
        ({"type": "length", "unit": "tokens", "min": 2, "max": 3}, "one two  three", (1.0, True)),
        ({"type": "length", "unit": "tokens", "max": 3}, "one two three four", (0.0, False)),
    ],
)
def test_binary_checks(check: dict[str, Any], answer: str, expected: tuple[float, bool]) -> None:
    assert one(check, answer) == expected


def test_length_in_tokens_uses_the_given_tokenizer() -> None:
    check = {"type": "length", "unit": "tokens", "max": 5}
    answer = "one two three"
    assert one(check, answer) == (1.0, True)
    assert one(check, answer, scorer=Scorer(count_tokens=len)) == (0.0, False)  # 13 "tokens"


def test_failed_checks_say_why() -> None:
    result = score(
        [
            {"type": "json_schema", "schema": {"required": ["name"]}},
            {"type": "length", "max": 3},
        ],
        '{"age": 3}',
    )
    assert "name" in (result.checks[0].detail or "")
    assert "10 chars > max 3" == result.checks[1].detail


# --- the total ------------------------------------------------------------------------------


def test_total_is_the_weighted_mean_of_applicable_checks() -> None:
    result = score(
        [
            {"type": "contains", "value": "Paris", "weight": 3},
            {"type": "contains", "name": "london", "value": "London", "weight": 1},
            {"type": "grounded", "weight": 10},  # no retrieved chunks: not applicable
        ],
        "Paris is lovely.",
    )
    assert [c.score for c in result.checks] == [1.0, 0.0, None]
    assert [c.passed for c in result.checks] == [True, False, None]
    assert result.total == pytest.approx(0.75)
    assert result.epoch == "e"


def test_total_is_none_when_no_check_applies() -> None:
    result = score(
        [{"type": "grounded"}, {"type": "reference_similarity"}],
        "Paris is lovely.",
        scorer=Scorer(embed=bag_of_words),
    )
    assert [c.score for c in result.checks] == [None, None]
    assert result.total is None


def test_graded_scores_enter_the_total_with_their_weight() -> None:
    result = score(
        [
            {"type": "json_valid", "weight": 1},
            {"type": "grounded", "weight": 3, "pass_threshold": 0.5},
        ],
        f"{FRANCE} Bananas grow on tall tropical plants.",
        scorer=Scorer(embed=bag_of_words),
        context=[FRANCE],
    )
    assert result.checks[1].score == pytest.approx(0.5)
    assert result.total == pytest.approx((0 * 1 + 0.5 * 3) / 4)


# --- semantic checks ------------------------------------------------------------------------


def test_grounded_counts_the_share_of_supported_sentences() -> None:
    embed = Scorer(embed=bag_of_words)
    supported = f"{FRANCE} {RIVERS}"
    mixed = f"{FRANCE}\n{RIVERS} Bananas grow on tall tropical plants."
    grounded = {"type": "grounded"}

    assert one(grounded, supported, scorer=embed, context=[FRANCE, RIVERS]) == (1.0, True)
    share, passed = one(grounded, mixed, scorer=embed, context=[FRANCE, RIVERS])
    assert share == pytest.approx(2 / 3)
    assert passed is False  # default pass_threshold 0.8
    lenient = {"type": "grounded", "pass_threshold": 0.6}
    assert one(lenient, mixed, scorer=embed, context=[FRANCE, RIVERS])[1] is True
    detail = score([grounded], mixed, scorer=embed, context=[FRANCE, RIVERS]).checks[0].detail
    assert detail is not None and "2/3" in detail and "Bananas" in detail


def test_grounded_threshold_decides_support() -> None:
    embed = Scorer(embed=bag_of_words)
    paraphrase = "Paris is the largest city of France."
    loose = {"type": "grounded", "threshold": 0.5}
    strict = {"type": "grounded", "threshold": 0.99}
    assert one(loose, paraphrase, scorer=embed, context=[FRANCE]) == (1.0, True)
    assert one(strict, paraphrase, scorer=embed, context=[FRANCE]) == (0.0, False)


def test_grounded_skips_short_sentences() -> None:
    embed = Scorer(embed=bag_of_words)
    answer = f"Sure! {FRANCE} Hope that helps."
    assert one({"type": "grounded"}, answer, scorer=embed, context=[FRANCE]) == (0.5, False)
    strict = {"type": "grounded", "min_words": 4}
    assert one(strict, answer, scorer=embed, context=[FRANCE]) == (1.0, True)
    only_short = "Sure! Thanks."
    assert one({"type": "grounded"}, only_short, scorer=embed, context=[FRANCE]) == (None, None)


@pytest.mark.parametrize(
    ("scorer", "context", "reason"),
    [
        (Scorer(embed=bag_of_words), [], "no retrieved chunks"),
        (Scorer(embed=bag_of_words), ["  "], "no retrieved chunks"),
        (Scorer(), [FRANCE], "no embedder"),
    ],
)
def test_grounded_without_chunks_or_embedder_does_not_apply(
    scorer: Scorer, context: list[str], reason: str
) -> None:
    result = score([{"type": "grounded"}], FRANCE, scorer=scorer, context=context).checks[0]
    assert (result.score, result.passed) == (None, None)
    assert reason in (result.detail or "")


def test_a_failing_embedder_makes_semantic_checks_not_apply() -> None:
    def broken(texts: list[str]) -> np.ndarray:
        raise RuntimeError("model not loaded")

    def short(texts: list[str]) -> np.ndarray:
        return bag_of_words(texts)[:1]

    for embed, words in ((broken, "model not loaded"), (short, "rows")):
        result = score(
            [{"type": "grounded"}, {"type": "reference_similarity"}, {"type": "json_valid"}],
            FRANCE,
            scorer=Scorer(embed=embed),
            context=[FRANCE],
            reference=FRANCE,
        )
        assert [c.score for c in result.checks] == [None, None, 0.0]
        assert all(words in (c.detail or "") for c in result.checks[:2])
        assert result.total == 0.0


def test_reference_similarity() -> None:
    embed = Scorer(embed=bag_of_words)
    check = {"type": "reference_similarity"}
    assert one(check, FRANCE, scorer=embed, reference=FRANCE) == (pytest.approx(1.0), True)
    low, passed = one(check, "Bananas grow on plants.", scorer=embed, reference=FRANCE)
    assert low is not None and low < 0.2 and passed is False
    paraphrase = "Paris is the largest city of France."
    near, passed = one(check, paraphrase, scorer=embed, reference=FRANCE)
    assert near is not None and low < near < 1 and passed is (near >= 0.7)
    strict = {"type": "reference_similarity", "threshold": 0.99}
    assert one(strict, paraphrase, scorer=embed, reference=FRANCE) == (near, False)
    assert one(check, "", scorer=embed, reference=FRANCE) == (0.0, False)
    assert one(check, FRANCE, scorer=embed) == (None, None)
    assert one(check, FRANCE, scorer=Scorer(), reference=FRANCE) == (None, None)


def test_embedding_runs_off_the_event_loop_in_one_worker_thread() -> None:
    threads: list[int] = []

    def embed(texts: list[str]) -> np.ndarray:
        threads.append(threading.get_ident())
        return bag_of_words(texts)

    def count_tokens(text: str) -> int:
        threads.append(threading.get_ident())
        return len(text.split())

    async def scenario() -> int:
        rubric = parse_rubric(
            {
                "checks": [
                    {"type": "grounded"},
                    {"type": "length", "unit": "tokens", "max": 100},
                    {"type": "reference_similarity"},
                ]
            }
        )
        scorer = Scorer(embed=embed, count_tokens=count_tokens)
        await scorer.score(rubric, item(FRANCE, context=[FRANCE], reference=FRANCE), epoch="e")
        return threading.get_ident()

    loop_thread = asyncio.run(scenario())
    assert len(threads) == 3
    assert len(set(threads)) == 1 and loop_thread not in threads


# --- llm_judge ------------------------------------------------------------------------------


class FakeJudge:
    """Records calls; replies with a fixed score and reason, or raises."""

    def __init__(self, score: float = 7, reason: str = "fine", *, error: Exception | None = None):
        self.reply = JudgeReply(score, reason, tokens=42)
        self.error = error
        self.calls: list[JudgeCall] = []

    async def __call__(self, call: JudgeCall) -> JudgeReply:
        self.calls.append(call)
        if self.error is not None:
            raise self.error
        return self.reply


JUDGE = {
    "type": "llm_judge",
    "model": "judge-m",
    "prompt": 'Q: {question}\nA: {answer}\nC: {context}\nScore JSON like {"score": 1}',
    "threshold": 6,
}


@pytest.mark.parametrize(
    ("judge_score", "reason", "expected"),
    [
        (4, "PASS - looks great", (0.4, False)),
        (7, "FAIL", (0.7, True)),
        (6, "borderline", (0.6, True)),
    ],
)
def test_judge_pass_comes_from_the_score_never_the_reason(
    judge_score: float, reason: str, expected: tuple[float, bool]
) -> None:
    judge = FakeJudge(judge_score, reason)
    result = score([JUDGE], "Ann", scorer=Scorer(judge=judge))
    check = result.checks[0]
    assert (check.score, check.passed) == (pytest.approx(expected[0]), expected[1])
    assert reason in (check.detail or "")
    assert result.judge_tokens == 42


def test_judge_scale_one_and_default_threshold() -> None:
    check = {"type": "llm_judge", "prompt": "{answer}", "scale": 1}
    assert one(check, "x", scorer=Scorer(judge=FakeJudge(0.5))) == (0.5, False)
    assert one(check, "x", scorer=Scorer(judge=FakeJudge(0.6))) == (pytest.approx(0.6), True)


def test_judge_call_carries_the_filled_prompt_model_schema_and_limit() -> None:
    judge = FakeJudge()
    score(
        [{**JUDGE, "max_tokens": 99}],
        "It says {question} and {context} literally",
        scorer=Scorer(judge=judge),
        question="Who wrote it?",
        context=["chunk one", "chunk two"],
    )
    (call,) = judge.calls
    assert call.model == "judge-m"
    assert call.max_tokens == 99
    assert call.schema == JUDGE_SCHEMA
    assert call.prompt.startswith(
        "Q: Who wrote it?\nA: It says {question} and {context} literally\n"
        "C: chunk one\n\nchunk two\n"
        'Score JSON like {"score": 1}'
    )
    assert "0 to 10" in call.prompt


@pytest.mark.parametrize(
    ("judge", "words"),
    [
        (FakeJudge(error=TimeoutError("judge timed out")), "judge timed out"),
        (FakeJudge(error=JudgeReplyError("judge reply is not JSON")), "not JSON"),
        (FakeJudge(11), "outside 0..10"),
        (FakeJudge(float("nan")), "no usable score"),
    ],
)
def test_judge_failure_makes_only_that_check_not_applicable(judge: FakeJudge, words: str) -> None:
    result = score([JUDGE, {"type": "contains", "value": "Ann"}], "Ann", scorer=Scorer(judge=judge))
    assert (result.checks[0].score, result.checks[0].passed) == (None, None)
    assert words in (result.checks[0].detail or "")
    assert result.total == 1.0


@pytest.mark.parametrize(
    ("check", "scorer_judge", "allow_judge", "words"),
    [
        ({**JUDGE, "rate": 0}, True, True, "not selected"),
        (JUDGE, True, False, "budget"),
        (JUDGE, False, True, "no judge"),
    ],
)
def test_judge_not_called(
    check: dict[str, Any], scorer_judge: bool, allow_judge: bool, words: str
) -> None:
    judge = FakeJudge()
    scorer = Scorer(judge=judge) if scorer_judge else Scorer()
    for n in range(20):
        result = score([check], "x", scorer=scorer, allow_judge=allow_judge, sample_id=f"r{n}")
        assert result.checks[0].score is None
        assert words in (result.checks[0].detail or "")
    assert judge.calls == []


def test_judge_rate_is_a_reproducible_share_of_sample_ids() -> None:
    judge = FakeJudge()
    check = {**JUDGE, "rate": 0.3}
    ids = [f"req-{n}" for n in range(300)]

    def judged() -> list[str]:
        judge.calls.clear()
        picked = []
        for sample_id in ids:
            result = score([check], "x", scorer=Scorer(judge=judge), sample_id=sample_id)
            if result.checks[0].score is not None:
                picked.append(sample_id)
        assert len(judge.calls) == len(picked)
        return picked

    first = judged()
    assert 60 <= len(first) <= 120
    assert judged() == first
    renamed = {**check, "name": "other_judge"}
    others = [s for s in ids if score([renamed], "x", scorer=Scorer(judge=judge), sample_id=s)
              .checks[0].score is not None]  # fmt: skip
    assert others != first  # salted by the check's name: independent of other hash decisions


def test_parse_judge_reply() -> None:
    reply = parse_judge_reply('{"score": 8, "reason": "ok", "verdict": "FAIL"}', tokens=5)
    assert reply == JudgeReply(8.0, "ok", 5)
    for text in ('{"score": "8", "reason": "ok"}', '{"score": true, "reason": "x"}',
                 '{"score": 8}', "[8]", "eight"):  # fmt: skip
        with pytest.raises(JudgeReplyError):
            parse_judge_reply(text)


def test_a_parsed_rubric_cannot_be_changed_into_an_invalid_one() -> None:
    rubric = parse_rubric(EXAMPLE)
    assert isinstance(rubric, Rubric)
    with pytest.raises(ValueError):
        rubric.checks[0].weight = -1  # type: ignore[misc]
