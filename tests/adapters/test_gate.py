"""The promotion gate: the bootstrap, the decision rules and run_gate over fake callables."""

from __future__ import annotations

import asyncio
import json
import logging

import numpy as np
import pytest
from pydantic import ValidationError

from adapters.gate import (
    Conversation,
    GateConfig,
    GateError,
    Scored,
    decide,
    gate_input,
    paired_bootstrap,
    run_gate,
)

CONFIG = GateConfig()


def scored(totals: list[float | None], **checks: list[bool | None]) -> list[Scored]:
    return [
        Scored(total, {name: outcomes[i] for name, outcomes in checks.items()})
        for i, total in enumerate(totals)
    ]


def frozen_set(n: int) -> list[Conversation]:
    return [
        [
            {"role": "system", "content": "Extract the invoice number as JSON."},
            {"role": "user", "content": f"Invoice INV-{i:03d}, due tomorrow."},
            {"role": "assistant", "content": json.dumps({"invoice": f"INV-{i:03d}"})},
        ]
        for i in range(n)
    ]


# --- paired_bootstrap -------------------------------------------------------------------------


def test_bootstrap_interval_brackets_the_mean_with_the_normal_width() -> None:
    diffs = np.random.default_rng(1).normal(0.1, 0.2, size=200)
    low, high = paired_bootstrap(diffs, confidence=0.95, resamples=4000, seed=0)
    assert low < 0.1 < high
    assert low < diffs.mean() < high
    # Percentile interval of a mean: close to mean +- 1.96 standard errors.
    se = diffs.std(ddof=1) / np.sqrt(diffs.size)
    assert low == pytest.approx(diffs.mean() - 1.96 * se, abs=0.15 * 1.96 * se)
    assert high == pytest.approx(diffs.mean() + 1.96 * se, abs=0.15 * 1.96 * se)


def test_bootstrap_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(7)
    trials, covered = 300, 0
    for trial in range(trials):
        diffs = rng.normal(0.05, 0.3, size=60)
        low, high = paired_bootstrap(diffs, confidence=0.95, resamples=500, seed=trial)
        covered += low <= 0.05 <= high
    assert 0.89 <= covered / trials <= 0.99


def test_bootstrap_is_deterministic_per_seed() -> None:
    diffs = np.random.default_rng(2).uniform(-1, 1, size=50).tolist()
    first = paired_bootstrap(diffs, confidence=0.95, resamples=2000, seed=3)
    assert paired_bootstrap(diffs, confidence=0.95, resamples=2000, seed=3) == first
    assert paired_bootstrap(diffs, confidence=0.95, resamples=2000, seed=4) != first
    wider = paired_bootstrap(diffs, confidence=0.99, resamples=2000, seed=3)
    assert wider[0] < first[0] and wider[1] > first[1]


def test_bootstrap_of_constant_diffs_is_a_point_and_bad_input_is_refused() -> None:
    assert paired_bootstrap([0.1] * 30, confidence=0.95, resamples=100, seed=0) == (0.1, 0.1)
    with pytest.raises(ValueError):
        paired_bootstrap([], confidence=0.95, resamples=100, seed=0)
    with pytest.raises(ValueError):
        paired_bootstrap([0.1, float("nan")], confidence=0.95, resamples=100, seed=0)


# --- decide -----------------------------------------------------------------------------------


def test_clearly_better_challenger_is_promoted_with_its_numbers() -> None:
    rng = np.random.default_rng(0)
    champ = np.clip(rng.normal(0.6, 0.1, size=40), 0, 1)
    chall = np.clip(rng.normal(0.9, 0.05, size=40), 0, 1)
    verdict = decide(scored(champ.tolist()), scored(chall.tolist()), config=CONFIG)
    assert verdict.promote
    assert verdict.n == 40
    assert verdict.mean_champion == pytest.approx(champ.mean())
    assert verdict.mean_challenger == pytest.approx(chall.mean())
    assert verdict.mean_diff == pytest.approx((chall - champ).mean())
    assert 0 < verdict.ci_low < verdict.mean_diff < verdict.ci_high
    assert verdict.champion_scores == champ.tolist()
    assert verdict.challenger_scores == chall.tolist()
    assert verdict.reason.startswith("promote: challenger ")
    assert f"[{verdict.ci_low:.3f}, {verdict.ci_high:.3f}]" in verdict.reason
    assert "\n" not in verdict.reason


def test_equal_scores_are_a_tie_and_rejected() -> None:
    totals = np.random.default_rng(3).uniform(0, 1, size=30).tolist()
    verdict = decide(scored(totals), scored(totals), config=CONFIG)
    assert not verdict.promote
    assert (verdict.ci_low, verdict.ci_high, verdict.mean_diff) == (0.0, 0.0, 0.0)
    assert verdict.reason.startswith("reject: 95% CI of diff [0.000, 0.000] not above margin")


def test_slightly_better_but_noisy_challenger_is_rejected() -> None:
    rng = np.random.default_rng(5)
    champ = rng.uniform(0.2, 0.8, size=30)
    noise = rng.normal(0, 0.3, size=30)
    chall = champ + 0.02 + (noise - noise.mean())  # better by exactly 0.02 on average
    verdict = decide(scored(champ.tolist()), scored(chall.tolist()), config=CONFIG)
    assert verdict.mean_diff == pytest.approx(0.02)
    assert verdict.ci_low <= 0 < verdict.ci_high
    assert not verdict.promote
    assert "not above margin 0.000" in verdict.reason


def test_margin_raises_the_bar() -> None:
    champ = [0.5] * 20
    chall = [0.6, 0.62] * 10  # about 0.11 better, tightly
    assert decide(scored(champ), scored(chall), config=CONFIG).promote
    verdict = decide(scored(champ), scored(chall), config=GateConfig(margin=0.2))
    assert not verdict.promote
    assert "not above margin 0.200" in verdict.reason


def test_a_check_worse_beyond_tolerance_rejects_a_better_challenger() -> None:
    champ = scored([0.6] * 20, json_valid=[True] * 19 + [False], polite=[True] * 20)
    chall = scored(
        [0.9] * 20, json_valid=[True] * 16 + [False] * 4, polite=[True] * 20
    )  # 0.80 vs 0.95
    verdict = decide(champ, chall, config=CONFIG)
    assert not verdict.promote
    assert verdict.ci_low > 0  # the totals alone would have promoted it
    assert verdict.check_pass_rates["json_valid"] == {"champion": 0.95, "challenger": 0.8}
    assert verdict.reason.startswith(
        "reject: check json_valid pass rate 0.80 vs 0.95 (worse by 0.15 > tolerance 0.05)"
    )
    assert "polite" not in verdict.reason


def test_a_check_worse_within_tolerance_or_at_it_does_not_reject() -> None:
    champ = scored([0.6] * 20, json_valid=[True] * 19 + [False])  # 0.95
    at_tolerance = scored([0.9] * 20, json_valid=[True] * 18 + [False] * 2)  # 0.90
    assert decide(champ, at_tolerance, config=CONFIG).promote
    assert not decide(champ, at_tolerance, config=GateConfig(check_tolerance=0.04)).promote


def test_check_rates_use_applicable_examples_and_skip_one_sided_checks() -> None:
    champ = scored([0.5] * 4, cites=[True, False, None, None], only_champ=[False] * 4)
    chall = scored([0.9] * 4, cites=[None, True, True, None], only_chall=[True] * 4)
    verdict = decide(champ, chall, config=CONFIG)
    assert verdict.check_pass_rates == {"cites": {"champion": 0.5, "challenger": 1.0}}
    # A check that never applies on one side is not comparable.
    champ = scored([0.5] * 4, cites=[True] * 4)
    chall = scored([0.9] * 4, cites=[None] * 4)
    assert decide(champ, chall, config=CONFIG).check_pass_rates == {}


def test_shadow_mean_below_champion_live_mean_rejects() -> None:
    champ, chall = scored([0.6] * 20), scored([0.9] * 20)
    verdict = decide(champ, chall, config=CONFIG, shadow_mean=0.70, champion_live_mean=0.75)
    assert not verdict.promote
    assert "shadow mean 0.700 vs champion live mean 0.750" in verdict.reason
    assert (verdict.shadow_mean, verdict.champion_live_mean) == (0.70, 0.75)
    within = decide(champ, chall, config=CONFIG, shadow_mean=0.74, champion_live_mean=0.75)
    assert within.promote
    assert "shadow mean 0.740" in within.reason
    loose = GateConfig(shadow_tolerance=0.1)
    assert decide(champ, chall, config=loose, shadow_mean=0.70, champion_live_mean=0.75).promote


def test_none_totals_are_dropped_from_the_pairs() -> None:
    champ = scored([0.5, None, 0.5, 0.5, 0.4])
    chall = scored([0.9, 0.1, None, 0.9, 0.8])
    verdict = decide(champ, chall, config=CONFIG)
    assert verdict.n == 3
    assert verdict.mean_champion == pytest.approx((0.5 + 0.5 + 0.4) / 3)
    assert verdict.mean_challenger == pytest.approx((0.9 + 0.9 + 0.8) / 3)
    assert verdict.champion_scores == [0.5, None, 0.5, 0.5, 0.4]
    assert verdict.challenger_scores == [0.9, 0.1, None, 0.9, 0.8]
    assert "2 dropped" in verdict.reason
    with pytest.raises(GateError, match="none of the 2 examples"):
        decide(scored([None, 0.5]), scored([0.5, None]), config=CONFIG)


def test_decide_refuses_misaligned_or_empty_lists() -> None:
    with pytest.raises(GateError):
        decide(scored([0.5, 0.5]), scored([0.5]), config=CONFIG)
    with pytest.raises(GateError):
        decide([], [], config=CONFIG)


def test_config_is_validated_and_tolerates_unknown_keys(caplog: pytest.LogCaptureFixture) -> None:
    for bad in (
        {"confidence": 1.0},
        {"check_tolerance": -0.1},
        {"resamples": 10},
        {"concurrency": 0},
        {"margin": float("nan")},
    ):
        with pytest.raises(ValidationError):
            GateConfig(**bad)
    with caplog.at_level(logging.WARNING, logger="tuneloop.gate"):
        config = GateConfig.model_validate({"margin": 0.1, "from_the_future": 1})
    assert config.margin == 0.1
    assert "from_the_future" in caplog.text
    assert GateConfig.model_validate_json(config.model_dump_json()) == config
    with pytest.raises(ValueError):
        Scored(float("inf"), {})


# --- run_gate ---------------------------------------------------------------------------------


class FakeEngine:
    """Challenger answers in JSON; champion in prose except every third example. Records the
    messages it is asked and the most calls it had in flight at once."""

    def __init__(self, *, delay: float = 0.0) -> None:
        self.delay = delay
        self.asked: list[tuple[str, Conversation]] = []
        self.in_flight = 0
        self.peak = 0

    async def _busy(self) -> None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1

    async def generate(self, model: str, messages: Conversation) -> str:
        self.asked.append((model, messages))
        await self._busy()
        number = messages[-1]["content"].split()[1].rstrip(",")
        if model == "extract@v2" or int(number[4:]) % 3 == 0:
            return json.dumps({"invoice": number})
        return f"The invoice number is {number}."

    async def score(self, conversation: Conversation, answer: str) -> Scored:
        await self._busy()
        try:
            exact = json.loads(answer) == json.loads(conversation[-1]["content"])
        except json.JSONDecodeError:
            return Scored(0.0, {"json_valid": False, "exact": None})
        return Scored(1.0 if exact else 0.5, {"json_valid": True, "exact": exact})


def gate(frozen: list[Conversation], engine: FakeEngine, **kwargs: object):
    return asyncio.run(
        run_gate(
            frozen,
            champion="extract@v1",
            challenger="extract@v2",
            generate=engine.generate,
            score=engine.score,
            config=kwargs.pop("config", CONFIG),  # type: ignore[arg-type]
            **kwargs,  # type: ignore[arg-type]
        )
    )


def test_run_gate_promotes_the_json_challenger_with_correct_numbers() -> None:
    frozen, engine, progress = frozen_set(30), FakeEngine(), []
    verdict = gate(frozen, engine, on_progress=lambda done, total: progress.append((done, total)))
    assert verdict.promote
    assert verdict.n == 30
    assert verdict.challenger_scores == [1.0] * 30
    assert verdict.champion_scores == [1.0 if i % 3 == 0 else 0.0 for i in range(30)]
    assert verdict.mean_champion == pytest.approx(10 / 30)
    assert verdict.mean_challenger == 1.0
    assert verdict.mean_diff == pytest.approx(20 / 30)
    assert verdict.ci_low > 0.4
    assert verdict.check_pass_rates == {
        "json_valid": {"champion": pytest.approx(1 / 3), "challenger": 1.0},
        "exact": {"champion": 1.0, "challenger": 1.0},
    }
    # Both models were asked every input, without the reference answer.
    asked = sorted((model, messages[-1]["content"]) for model, messages in engine.asked)
    models = ("extract@v1", "extract@v2")
    assert asked == sorted((model, c[1]["content"]) for model in models for c in frozen)
    assert all([m["role"] for m in msgs] == ["system", "user"] for _, msgs in engine.asked)
    assert progress[-1] == (30, 30) and [d for d, _ in progress] == list(range(1, 31))
    assert frozen == frozen_set(30)  # the frozen set itself is untouched


def test_run_gate_rejects_when_the_challenger_is_no_better() -> None:
    class Same(FakeEngine):
        async def generate(self, model: str, messages: Conversation) -> str:
            return await super().generate("extract@v1", messages)

    verdict = gate(frozen_set(12), Same())
    assert not verdict.promote
    assert verdict.mean_diff == 0.0


def test_run_gate_bounds_concurrency() -> None:
    engine = FakeEngine(delay=0.01)
    gate(frozen_set(20), engine, config=GateConfig(concurrency=3))
    assert engine.peak == 3
    engine = FakeEngine(delay=0.01)
    gate(frozen_set(20), engine, config=GateConfig(concurrency=1))
    assert engine.peak == 1


def test_a_generate_failure_fails_the_gate_naming_the_example() -> None:
    class Broken(FakeEngine):
        async def generate(self, model: str, messages: Conversation) -> str:
            if "INV-004" in messages[-1]["content"] and model == "extract@v2":
                raise ConnectionError("replica went away")
            return await super().generate(model, messages)

    async def scenario() -> GateError:
        with pytest.raises(GateError) as caught:
            await run_gate(
                frozen_set(10),
                champion="extract@v1",
                challenger="extract@v2",
                generate=Broken(delay=0.01).generate,
                score=FakeEngine().score,
                config=CONFIG,
            )
        # Nothing is left running behind the error.
        assert asyncio.all_tasks() == {asyncio.current_task()}
        return caught.value

    error = asyncio.run(scenario())
    assert error.index == 4
    assert "example 4" in str(error) and "'extract@v2'" in str(error)
    assert isinstance(error.__cause__, ConnectionError)


def test_a_score_failure_fails_the_gate_naming_the_example() -> None:
    class Broken(FakeEngine):
        async def score(self, conversation: Conversation, answer: str) -> Scored:
            if "INV-007" in conversation[1]["content"]:
                raise RuntimeError("judge timed out")
            return await super().score(conversation, answer)

    with pytest.raises(GateError, match="example 7: scoring") as caught:
        gate(frozen_set(10), Broken())
    assert caught.value.index == 7


def test_an_empty_frozen_set_or_one_without_an_answer_fails_the_gate() -> None:
    with pytest.raises(GateError, match="no examples"):
        gate([], FakeEngine())
    frozen = frozen_set(3)
    frozen[2] = frozen[2][:2]
    with pytest.raises(GateError, match="example 2 has no assistant turn") as caught:
        gate(frozen, FakeEngine())
    assert caught.value.index == 2


def test_run_gate_drops_pairs_with_no_total() -> None:
    class Partial(FakeEngine):
        async def score(self, conversation: Conversation, answer: str) -> Scored:
            if "INV-000" in conversation[1]["content"]:
                return Scored(None, {"json_valid": None})
            return await super().score(conversation, answer)

    verdict = gate(frozen_set(9), Partial())
    assert verdict.n == 8
    assert verdict.champion_scores[0] is None and verdict.challenger_scores[0] is None
    assert verdict.mean_champion == pytest.approx(2 / 8)  # examples 3 and 6 in JSON
    assert "1 dropped" in verdict.reason


def test_gate_input_strips_the_last_assistant_turn_only() -> None:
    conversation = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"},
    ]
    assert gate_input(conversation) == conversation[:3]
    with pytest.raises(ValueError):
        gate_input([{"role": "assistant", "content": "only"}])
