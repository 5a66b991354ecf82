"""Drift detection over score streams: what the drift check and the dashboard rely on.

Streams are synthetic and seeded: per-sample scores from a Beta distribution around a mean, with
a per-batch shift of that mean (traffic changes from batch to batch), as rubric scores look.
"""

from __future__ import annotations

import json
import logging
import math
import warnings

import numpy as np
import pytest

from eval.drift import (
    Baseline,
    DriftConfig,
    compute_baseline,
    detect,
    sigma_allowance,
)

CONFIG = DriftConfig()
WINDOW = CONFIG.baseline_window  # 200
BATCH = CONFIG.batch_size  # 25


def stream(
    rng: np.random.Generator,
    means: np.ndarray | float,
    n: int,
    *,
    kappa: float = 8.0,
    batch_sd: float = 0.02,
) -> np.ndarray:
    """n scores; ``means`` is the mean per sample (or one for all), shifted per batch."""
    mean = np.broadcast_to(np.asarray(means, dtype=float), (n,))
    shift = np.repeat(rng.normal(0.0, batch_sd, -(-n // BATCH)), BATCH)[:n]
    mu = np.clip(mean + shift, 0.02, 0.98)
    return rng.beta(kappa * mu, kappa * (1 - mu))


def outcomes(rng: np.random.Generator, pass_rate: float, n: int) -> list[bool]:
    return [bool(x) for x in rng.random(n) < pass_rate]


# --- baseline ----------------------------------------------------------------------------------


def test_baseline_state_until_the_window_is_full() -> None:
    scores = stream(np.random.default_rng(0), 0.8, WINDOW)
    early = detect(scores[: WINDOW - 1], config=CONFIG)
    assert early.state == "baseline"
    assert early.statistic is None and early.baseline is None and early.alarm_at is None
    assert "199 of 200" in early.reason
    assert compute_baseline(scores[: WINDOW - 1], config=CONFIG) is None

    full = detect(scores, config=CONFIG)
    assert full.state == "ok"
    assert full.baseline is not None and full.baseline.samples == WINDOW
    assert full.batches_after_baseline == 0 and full.statistic == 0.0


def test_baseline_window_is_rounded_up_to_whole_batches() -> None:
    config = DriftConfig(baseline_samples=210, batch_size=25)
    scores = stream(np.random.default_rng(1), 0.8, 225)
    assert config.baseline_window == 225
    assert detect(scores[:224], config=config).state == "baseline"
    baseline = compute_baseline(scores, config=config)
    assert baseline is not None and (baseline.samples, baseline.batches) == (225, 9)


def test_baseline_figures() -> None:
    scores = stream(np.random.default_rng(2), 0.8, 1000)
    baseline = compute_baseline(scores, config=CONFIG)
    assert baseline is not None
    assert baseline.mean == pytest.approx(scores[:WINDOW].mean())
    # at least what independent samples alone give to a batch mean
    assert baseline.sigma >= scores[:WINDOW].std(ddof=1) / math.sqrt(BATCH) - 1e-12


def test_persisted_baseline_gives_the_same_verdict() -> None:
    rng = np.random.default_rng(3)
    scores = np.concatenate([stream(rng, 0.8, 700), stream(rng, 0.6, 300)])
    passes = {"json_valid": outcomes(rng, 0.98, 1000)}
    whole = detect(scores, config=CONFIG, passes=passes)

    baseline = compute_baseline(scores, passes, config=CONFIG)
    assert baseline is not None
    restored = Baseline.from_dict(json.loads(json.dumps(baseline.to_dict())))
    assert restored == baseline
    after = detect(
        scores[WINDOW:],
        config=CONFIG,
        passes={"json_valid": passes["json_valid"][WINDOW:]},
        baseline=restored,
    )
    assert whole.state == after.state == "drift"
    assert after.statistic == pytest.approx(whole.statistic)
    assert after.bernoulli == pytest.approx(whole.bernoulli)
    assert after.batches_after_baseline == whole.batches_after_baseline
    assert after.reason == whole.reason
    assert whole.alarm_at is not None and after.alarm_at == whole.alarm_at - WINDOW


# --- score CUSUM ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(10))
def test_stable_stream_never_drifts(seed: int) -> None:
    scores = stream(np.random.default_rng(seed), 0.8, WINDOW + 5000)
    result = detect(scores, config=CONFIG)
    assert result.state in ("ok", "warning"), result.reason
    assert result.alarm_at is None


def test_stable_stream_of_independent_scores_stays_ok() -> None:
    scores = stream(np.random.default_rng(11), 0.8, WINDOW + 5000, batch_sd=0.0)
    result = detect(scores, config=CONFIG)
    assert result.state == "ok", result.reason
    assert result.batches_after_baseline == 200
    assert result.reason.startswith("score CUSUM")


@pytest.mark.parametrize("seed", range(10))
def test_a_drop_of_0_2_is_caught_within_200_samples(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    change = WINDOW + 500
    scores = np.concatenate([stream(rng, 0.8, change), stream(rng, 0.6, 400)])
    result = detect(scores, config=CONFIG)
    assert result.state == "drift", result.reason
    assert result.alarm_at is not None and change <= result.alarm_at < change + 200
    assert "score CUSUM" in result.reason and "> h=6" in result.reason


def test_a_slow_decline_is_caught_eventually() -> None:
    rng = np.random.default_rng(21)
    decline = np.linspace(0.8, 0.55, 3000)  # 0.05 lower every 600 samples
    scores = np.concatenate([stream(rng, 0.8, WINDOW), stream(rng, decline, 3000)])
    result = detect(scores, config=CONFIG)
    assert result.state == "drift", result.reason
    assert result.alarm_at is not None and result.alarm_at > WINDOW


@pytest.mark.parametrize("seed", range(5))
def test_a_noisy_prompt_mix_does_not_alarm(seed: int) -> None:
    """Two prompt types (easy ~0.9, hard ~0.5) whose share swings from batch to batch."""
    rng = np.random.default_rng(200 + seed)
    n = WINDOW + 5000
    share = np.repeat(rng.beta(6, 6, n // BATCH), BATCH)  # share of hard prompts per batch
    hard = rng.random(n) < share
    scores = np.where(hard, rng.beta(5, 5, n), rng.beta(18, 2, n))
    result = detect(scores, config=CONFIG)
    assert result.state != "drift", result.reason


def test_a_constant_baseline_then_a_drop() -> None:
    scores = np.concatenate([np.ones(WINDOW), np.full(100, 0.8)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by zero, no NaN
        result = detect(scores, config=CONFIG)
    assert result.baseline is not None and 0 < result.baseline.sigma < 0.05
    assert result.state == "drift"
    assert result.statistic is not None and math.isfinite(result.statistic)
    assert result.alarm_at == WINDOW + BATCH - 1  # the first batch after the baseline


def test_a_constant_baseline_followed_by_the_same_stays_ok() -> None:
    result = detect(np.ones(WINDOW + 500), config=CONFIG)
    assert result.state == "ok" and result.statistic == 0.0


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        ([0.80, 0.80], "ok"),
        ([0.62], "ok"),  # z = 3.6: S = 2.6, not above h/2
        ([0.59], "warning"),  # z = 4.2: S = 3.2
        ([0.59, 0.80], "ok"),  # back: S = 3.2 - 1 = 2.2
        ([0.59, 0.59], "drift"),  # S = 6.4
        ([0.40, 0.80, 0.80, 0.80, 0.80, 0.80], "drift"),  # S = 7, then down to 2: latched
    ],
)
def test_states_follow_the_thresholds(after: list[float], expected: str) -> None:
    config = DriftConfig(estimate_confidence=None)  # z = (0.8 - mean) / 0.05 exactly
    baseline = Baseline(mean=0.8, sigma=0.05, samples=200, batches=8)
    scores = np.repeat(after, config.batch_size)
    result = detect(scores, config=config, baseline=baseline)
    assert result.state == expected, result.reason


def test_latched_drift_reports_the_crossing() -> None:
    config = DriftConfig(estimate_confidence=None)
    baseline = Baseline(mean=0.8, sigma=0.05, samples=200, batches=8)
    scores = np.repeat([0.8, 0.5, 0.4, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8], BATCH)
    result = detect(scores, config=config, baseline=baseline)
    assert result.state == "drift"
    assert result.statistic == pytest.approx(5.0)  # back below h since, but drift holds
    assert result.alarm_at == 3 * BATCH - 1
    assert result.reason == "score CUSUM 12.0 > h=6 after 3 batches (mean 0.45 vs baseline 0.80)"


def test_an_incomplete_batch_waits() -> None:
    config = DriftConfig(estimate_confidence=None)
    baseline = Baseline(mean=0.8, sigma=0.05, samples=200, batches=8)
    result = detect(np.full(BATCH - 1, 0.0), config=config, baseline=baseline)
    assert result.state == "ok" and result.batches_after_baseline == 0


@pytest.mark.parametrize("seed", range(3))
def test_an_upward_shift_never_alarms(seed: int) -> None:
    rng = np.random.default_rng(300 + seed)
    scores = np.concatenate([stream(rng, 0.6, WINDOW), stream(rng, 0.95, 3000)])
    passes = {"json_valid": outcomes(rng, 0.9, WINDOW) + outcomes(rng, 1.0, 3000)}
    result = detect(scores, config=CONFIG, passes=passes)
    assert result.state == "ok", result.reason
    assert result.statistic == 0.0 and result.bernoulli == {"json_valid": 0.0}


def test_the_allowance_shrinks_as_the_baseline_grows() -> None:
    assert sigma_allowance(8, confidence=0.95) == pytest.approx(1.906, abs=1e-3)
    assert sigma_allowance(40, confidence=0.95) == pytest.approx(1.247, abs=1e-3)
    assert sigma_allowance(8, confidence=None) == 1.0
    assert sigma_allowance(2, confidence=0.95) > sigma_allowance(4, confidence=0.95) > 1.9


# --- Bernoulli CUSUM -----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_a_pass_rate_drop_from_0_98_to_0_7_is_caught(seed: int) -> None:
    rng = np.random.default_rng(400 + seed)
    n_before, n_after = WINDOW + 1000, 300
    scores = stream(rng, 0.8, n_before + n_after)  # the scores themselves do not move
    passes = {"json_valid": outcomes(rng, 0.98, n_before) + outcomes(rng, 0.7, n_after)}
    result = detect(scores, config=CONFIG, passes=passes)
    assert result.state == "drift", result.reason
    assert result.alarm_at is not None and n_before <= result.alarm_at < n_before + 100
    assert result.reason.startswith("check json_valid: Bernoulli CUSUM")


@pytest.mark.parametrize("seed", range(10))
def test_a_stable_pass_rate_of_0_98_does_not_alarm(seed: int) -> None:
    rng = np.random.default_rng(500 + seed)
    n = WINDOW + 10_000
    passes = {"json_valid": outcomes(rng, 0.98, n)}
    result = detect(stream(rng, 0.8, n), config=CONFIG, passes=passes)
    assert result.state != "drift", result.reason
    assert set(result.bernoulli) == {"json_valid"}


def test_not_applicable_samples_are_skipped() -> None:
    rng = np.random.default_rng(6)
    n = WINDOW + 400
    # the check applies to every other sample; where it applies it fails after the baseline
    applies = [i % 2 == 0 for i in range(n)]
    passes = {"regex": [(i < WINDOW) if a else None for i, a in enumerate(applies)]}
    result = detect(stream(rng, 0.8, n), config=CONFIG, passes=passes)
    assert result.baseline is not None
    assert result.baseline.fail_rates == {"regex": 0.0}
    assert result.baseline.check_samples == {"regex": WINDOW // 2}
    assert result.state == "drift" and result.alarm_at is not None
    assert applies[result.alarm_at]


def test_checks_seen_too_rarely_in_the_baseline_are_not_monitored() -> None:
    rng = np.random.default_rng(7)
    n = WINDOW + 100
    rare = [False if i < 5 else None for i in range(WINDOW)] + [False] * 100
    result = detect(stream(rng, 0.8, n), config=CONFIG, passes={"rare": rare})
    assert result.baseline is not None and result.baseline.fail_rates == {}
    assert result.bernoulli == {} and result.state == "ok"


def test_the_worst_detector_wins() -> None:
    rng = np.random.default_rng(8)
    n_before = WINDOW + 500
    scores = stream(rng, 0.8, n_before + 500)
    passes = {
        "json_valid": outcomes(rng, 0.98, n_before + 500),
        "schema": outcomes(rng, 0.98, n_before) + [False] * 500,
    }
    result = detect(scores, config=CONFIG, passes=passes)
    assert result.state == "drift"
    assert result.reason.startswith("check schema:")
    assert result.bernoulli["schema"] > CONFIG.bernoulli_h > result.bernoulli["json_valid"]
    assert result.statistic is not None and result.statistic < CONFIG.h


# --- inputs and configuration --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "passes", "message"),
    [
        ([0.5, 1.2], None, "in \\[0, 1\\]"),
        ([0.5, float("nan")], None, "in \\[0, 1\\]"),
        ([0.5, 0.5], {"json_valid": [True]}, "1 entries for 2 scores"),
        ([0.5, 0.5], {"json_valid": [True, "yes"]}, "expected True, False or None"),
    ],
)
def test_bad_inputs_are_refused(scores: list, passes: dict | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        detect(scores, config=CONFIG, passes=passes)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"baseline_samples": 2.5}, "baseline_samples must be a positive integer"),
        ({"baseline_samples": 40, "batch_size": 25}, "at least two batches"),
        ({"k": -0.1}, "k must be finite and positive"),
        ({"h": 0}, "h must be finite and positive"),
        ({"h": math.inf}, "h must be finite and positive"),
        ({"bernoulli_h": -1}, "bernoulli_h must be finite and positive"),
        ({"bernoulli_p1": 1.0}, "bernoulli_p1 must be in"),
        ({"estimate_confidence": 0.3}, "estimate_confidence must be in"),
        ({"min_sigma": 0}, "min_sigma must be finite and positive"),
        ({"min_check_samples": 0}, "min_check_samples must be a positive integer"),
    ],
)
def test_config_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DriftConfig(**kwargs)


def test_config_round_trips_and_tolerates_unknown_keys(caplog: pytest.LogCaptureFixture) -> None:
    config = DriftConfig(baseline_samples=100, batch_size=10, k=0.5, h=5, bernoulli_p1=0.2)
    assert DriftConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with caplog.at_level(logging.WARNING, logger="tuneloop.eval.drift"):
        assert DriftConfig.from_dict({**config.to_dict(), "window": 3}) == config
    assert "window" in caplog.text


def test_every_config_field_has_help() -> None:
    from dataclasses import fields

    for cls in (DriftConfig, Baseline):
        for f in fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sigma": 0.0}, "sigma must be finite and positive"),
        ({"mean": 1.5}, "mean must be in"),
        ({"batches": 1}, "at least 2 batches"),
        ({"fail_rates": {"a": 0.1}}, "same checks"),
    ],
)
def test_baseline_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Baseline(**{"mean": 0.8, "sigma": 0.05, "samples": 200, "batches": 8, **kwargs})


def test_result_is_json_serialisable() -> None:
    rng = np.random.default_rng(9)
    result = detect(stream(rng, 0.8, 400), config=CONFIG, passes={"j": outcomes(rng, 0.9, 400)})
    data = json.loads(json.dumps(result.to_dict()))
    assert data["state"] == result.state
    assert Baseline.from_dict(data["baseline"]) == result.baseline
