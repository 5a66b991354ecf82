"""The promotion gate: does a challenger adapter beat the champion on the frozen test set?

Champion and challenger answer every frozen conversation through the real engine and both
answers are scored with the alias's rubric. The challenger is promoted only when all of these
hold:

1. the paired bootstrap interval of (challenger - champion) lies entirely above ``margin``;
2. no rubric check's pass rate is worse than the champion's by more than ``check_tolerance``;
3. when shadow samples exist, their mean is not below the champion's live mean by more than
   ``shadow_tolerance``.

Otherwise the verdict is a rejection that keeps both score sets and a one-line reason.

A pure library: the gateway passes in ``generate`` (a completion through its own internal
path) and ``score`` (the rubric); this module imports neither the gateway nor ``eval``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from adapters.config import TolerantConfig

logger = logging.getLogger("tuneloop.gate")

Conversation = list[dict[str, str]]

# Rounding slack for "worse by more than a tolerance" comparisons (0.95 - 0.90 is 0.0500...04).
_EPS = 1e-9
# Bootstrap index matrices are drawn in blocks of at most this many elements (~32 MB of int64).
_BLOCK_ELEMENTS = 4_000_000


class GateError(RuntimeError):
    """The gate could not reach a verdict; ``index`` names the frozen example, when one is to
    blame. The original exception, if any, is the ``__cause__``."""

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class GateConfig(TolerantConfig):
    """How strict the gate is. Validated on construction; unknown keys are ignored with a
    warning so an older gateway can read a newer config (``model_dump`` round-trips)."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)
    _logger = logger

    margin: float = Field(
        default=0.0,
        ge=-1,
        le=1,
        description="The interval of (challenger - champion) must lie strictly above this, in "
        "rubric score units; 0 means 'better', a tie is never promoted.",
    )
    check_tolerance: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Largest drop in any check's pass rate (champion minus challenger) allowed.",
    )
    shadow_tolerance: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="How far the shadow mean may fall below the champion's live mean.",
    )
    confidence: float = Field(
        default=0.95, ge=0.5, lt=1, description="Two-sided confidence of the bootstrap interval."
    )
    resamples: int = Field(
        default=2000, ge=100, le=1_000_000, description="Bootstrap resamples of the paired diffs."
    )
    seed: int = Field(
        default=0, ge=0, description="Bootstrap seed: the same scores give the same verdict."
    )
    concurrency: int = Field(
        default=8,
        ge=1,
        le=1024,
        description="Generate and score calls in flight at once, over both models.",
    )


@dataclass(frozen=True)
class Scored:
    """One scored answer: the rubric total (None: no check applied) and each check's outcome
    (None: the check did not apply to this answer)."""

    total: float | None
    checks: dict[str, bool | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        total = self.total
        if total is not None and (
            isinstance(total, bool)
            or not isinstance(total, int | float)
            or not math.isfinite(total)
        ):
            raise ValueError(f"total must be a finite number or None, got {total!r}")
        object.__setattr__(self, "checks", dict(self.checks))


Generate = Callable[[str, Conversation], Awaitable[str]]
"""(served model name, input messages: the frozen conversation without its last assistant
turn) -> the answer text."""

Score = Callable[[Conversation, str], Awaitable[Scored]]
"""(the frozen conversation including its reference answer, the answer) -> its score."""


class GateVerdict(BaseModel):
    """The gate's decision with everything behind it; recorded whether promoted or not."""

    promote: bool = Field(description="True when every criterion held.")
    reason: str = Field(description="One line with the numbers behind the decision.")
    mean_champion: float = Field(description="Champion's mean total over the compared pairs.")
    mean_challenger: float = Field(description="Challenger's mean total over the pairs.")
    mean_diff: float = Field(description="Mean of (challenger - champion) over the pairs.")
    ci_low: float = Field(description="Lower bound of the bootstrap interval of mean_diff.")
    ci_high: float = Field(description="Upper bound of the bootstrap interval of mean_diff.")
    check_pass_rates: dict[str, dict[str, float]] = Field(
        description="Per check comparable on both sides: {'champion': rate, 'challenger': rate}."
    )
    shadow_mean: float | None = Field(description="Mean score of the challenger's shadow samples.")
    champion_live_mean: float | None = Field(description="Champion's live mean score.")
    shadow_samples: int = Field(default=0, description="Shadow requests scored.")
    shadow_failures: int = Field(default=0, description="Shadow requests that failed.")
    n: int = Field(description="Pairs compared (examples where both totals exist).")
    champion_scores: list[float | None] = Field(description="Champion total per frozen example.")
    challenger_scores: list[float | None] = Field(
        description="Challenger total per frozen example."
    )


def paired_bootstrap(
    diffs: Sequence[float], *, confidence: float, resamples: int, seed: int
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``diffs`` (challenger - champion per
    example). Deterministic for a seed and the same diffs."""
    values = np.asarray(diffs, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError("paired_bootstrap needs a non-empty sequence of differences")
    if not np.all(np.isfinite(values)):
        raise ValueError("paired_bootstrap differences must be finite")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples!r}")
    if values.min() == values.max():  # every resample has this mean; skip the rounding noise
        return float(values[0]), float(values[0])
    n = values.size
    rng = np.random.default_rng(seed)
    means = np.empty(resamples, dtype=np.float64)
    rows = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, resamples, rows):
        stop = min(resamples, start + rows)
        picks = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = values[picks].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def _pass_rate(scored: Sequence[Scored], name: str) -> float | None:
    outcomes = [s.checks.get(name) for s in scored]
    applicable = [passed for passed in outcomes if passed is not None]
    return sum(applicable) / len(applicable) if applicable else None


def check_pass_rates(
    champion: Sequence[Scored], challenger: Sequence[Scored]
) -> dict[str, dict[str, float]]:
    """Pass rate of each check on each side, over the examples where the check applied; a
    check that never applied on one side is not comparable and left out."""
    names = sorted({name for s in (*champion, *challenger) for name in s.checks})
    rates: dict[str, dict[str, float]] = {}
    for name in names:
        champ, chall = _pass_rate(champion, name), _pass_rate(challenger, name)
        if champ is not None and chall is not None:
            rates[name] = {"champion": champ, "challenger": chall}
    return rates


def decide(
    champion: Sequence[Scored],
    challenger: Sequence[Scored],
    *,
    config: GateConfig,
    shadow_mean: float | None = None,
    champion_live_mean: float | None = None,
) -> GateVerdict:
    """Judge two aligned score lists (one entry per frozen example, same order).

    Pairs where either total is None are left out of the paired comparison. Raises
    ``GateError`` when the lists differ in length or no pair has both totals.
    """
    if len(champion) != len(challenger):
        raise GateError(f"champion has {len(champion)} scores but challenger has {len(challenger)}")
    if not champion:
        raise GateError("no examples to compare")
    pairs = [
        (a.total, b.total)
        for a, b in zip(champion, challenger, strict=True)
        if a.total is not None and b.total is not None
    ]
    dropped = len(champion) - len(pairs)
    if not pairs:
        raise GateError(f"none of the {len(champion)} examples has a total on both sides")
    champ = np.array([a for a, _ in pairs], dtype=np.float64)
    chall = np.array([b for _, b in pairs], dtype=np.float64)
    diffs = chall - champ
    ci_low, ci_high = paired_bootstrap(
        diffs, confidence=config.confidence, resamples=config.resamples, seed=config.seed
    )
    rates = check_pass_rates(champion, challenger)

    interval = f"{config.confidence * 100:g}% CI of diff [{ci_low:.3f}, {ci_high:.3f}]"
    failures: list[str] = []
    if not ci_low > config.margin:
        failures.append(f"{interval} not above margin {config.margin:.3f}")
    for name, rate in rates.items():
        worse = rate["champion"] - rate["challenger"]
        if worse > config.check_tolerance + _EPS:
            failures.append(
                f"check {name} pass rate {rate['challenger']:.2f} vs {rate['champion']:.2f} "
                f"(worse by {worse:.2f} > tolerance {config.check_tolerance:.2f})"
            )
    shadow = ""
    if shadow_mean is not None and champion_live_mean is not None:
        shadow = f"shadow mean {shadow_mean:.3f} vs champion live mean {champion_live_mean:.3f}"
        if shadow_mean < champion_live_mean - config.shadow_tolerance - _EPS:
            failures.append(f"{shadow} (below by more than {config.shadow_tolerance:.2f})")

    mean_champion, mean_challenger = float(champ.mean()), float(chall.mean())
    summary = f"challenger {mean_challenger:.3f} vs champion {mean_champion:.3f}"
    notes = [f"{len(pairs)} pairs"]
    if dropped:
        notes.append(f"{dropped} dropped with no total")
    if failures:
        reason = f"reject: {'; '.join(failures)}; {summary} ({', '.join(notes)})"
    else:
        if shadow:
            notes.append(shadow)
        reason = f"promote: {summary}, {interval} > margin {config.margin:.3f} ({', '.join(notes)})"
    return GateVerdict(
        promote=not failures,
        reason=reason,
        mean_champion=mean_champion,
        mean_challenger=mean_challenger,
        mean_diff=float(diffs.mean()),
        ci_low=ci_low,
        ci_high=ci_high,
        check_pass_rates=rates,
        shadow_mean=shadow_mean,
        champion_live_mean=champion_live_mean,
        n=len(pairs),
        champion_scores=[s.total for s in champion],
        challenger_scores=[s.total for s in challenger],
    )


def gate_input(conversation: Conversation) -> Conversation:
    """The messages a model answers: everything before the last assistant turn."""
    last = max((i for i, m in enumerate(conversation) if m.get("role") == "assistant"), default=-1)
    if last < 0:
        raise ValueError("has no assistant turn to compare against")
    if last == 0:
        raise ValueError("has nothing before its assistant turn to answer")
    return [dict(message) for message in conversation[:last]]


async def run_gate(
    frozen: Sequence[Conversation],
    *,
    champion: str,
    challenger: str,
    generate: Generate,
    score: Score,
    config: GateConfig,
    shadow_mean: float | None = None,
    champion_live_mean: float | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> GateVerdict:
    """Have ``champion`` and ``challenger`` (served names) answer every frozen conversation,
    score each answer, then ``decide``.

    At most ``config.concurrency`` generate or score calls are in flight at once. Any failure
    of one example raises ``GateError`` naming its index (the rest is cancelled): there is no
    partial verdict. ``on_progress(done, total)`` is called as each example is fully scored.
    """
    if not frozen:
        raise GateError("the frozen set has no examples")
    inputs: list[Conversation] = []
    for index, conversation in enumerate(frozen):
        try:
            inputs.append(gate_input(conversation))
        except ValueError as exc:
            raise GateError(f"frozen example {index} {exc}", index=index) from None

    total = len(frozen)
    models = (champion, challenger)
    results: list[list[Scored | None]] = [[None] * total for _ in models]
    sides_done = [0] * total
    done = 0
    slots = asyncio.Semaphore(config.concurrency)

    async def answer_and_score(index: int, side: int) -> None:
        nonlocal done
        model = models[side]
        try:
            async with slots:
                answer = await generate(model, [dict(m) for m in inputs[index]])
            if not isinstance(answer, str):
                raise TypeError(f"generate returned {type(answer).__name__}, not str")
        except Exception as exc:
            raise GateError(
                f"frozen example {index}: generating with {model!r} failed: "
                f"{type(exc).__name__}: {exc}",
                index=index,
            ) from exc
        try:
            async with slots:
                scored = await score([dict(m) for m in frozen[index]], answer)
            if not isinstance(scored, Scored):
                raise TypeError(f"score returned {type(scored).__name__}, not Scored")
        except Exception as exc:
            raise GateError(
                f"frozen example {index}: scoring {model!r}'s answer failed: "
                f"{type(exc).__name__}: {exc}",
                index=index,
            ) from exc
        results[side][index] = scored
        sides_done[index] += 1
        if sides_done[index] == len(models):
            done += 1
            if on_progress is not None:
                on_progress(done, total)

    try:
        async with asyncio.TaskGroup() as group:
            for index in range(total):
                for side in range(len(models)):
                    group.create_task(answer_and_score(index, side))
    except BaseExceptionGroup as failed:
        errors = [e for e in failed.exceptions if isinstance(e, GateError)]
        # The first example to blame, with its own cause kept (not the group's traceback).
        first = min(errors, key=lambda e: e.index or 0) if errors else failed.exceptions[0]
        raise first from first.__cause__

    champion_scored = [s for s in results[0] if s is not None]
    challenger_scored = [s for s in results[1] if s is not None]
    verdict = decide(
        champion_scored,
        challenger_scored,
        config=config,
        shadow_mean=shadow_mean,
        champion_live_mean=champion_live_mean,
    )
    logger.info(
        "gate champion=%s challenger=%s promote=%s reason=%s",
        champion,
        challenger,
        verdict.promote,
        verdict.reason,
    )
    return verdict
