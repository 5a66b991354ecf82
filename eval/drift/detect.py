"""Judging a stream: input checks, the baseline estimate from the first window, and the
verdict that combines the score CUSUM with the checks' CUSUMs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from eval.drift.config import Baseline, DriftConfig, DriftResult
from eval.drift.cusum import check_track, score_track

MAD_TO_SD = 1.4826
_SEVERITY: dict[str, int] = {"baseline": 0, "ok": 1, "warning": 2, "drift": 3}


def compute_baseline(
    scores: Sequence[float],
    passes: Mapping[str, Sequence[bool | None]] | None = None,
    *,
    config: DriftConfig,
) -> Baseline | None:
    """The baseline from the first window of ``scores``; None until the window is full."""
    values = _as_scores(scores)
    return _baseline(values, _as_passes(passes, len(values)), config)


def detect(
    scores: Sequence[float],
    *,
    config: DriftConfig,
    passes: Mapping[str, Sequence[bool | None]] | None = None,
    baseline: Baseline | None = None,
) -> DriftResult:
    """Judge a stream. Without ``baseline``, ``scores`` starts at the baseline start and the
    first window becomes the baseline; with one (persisted earlier), ``scores`` holds only what
    came after its window. ``passes[check]`` is aligned with ``scores``; None skips a sample."""
    values = _as_scores(scores)
    checks = _as_passes(passes, len(values))
    start = 0
    if baseline is None:
        baseline = _baseline(values, checks, config)
        if baseline is None:
            return DriftResult(
                state="baseline",
                statistic=None,
                bernoulli={},
                baseline=None,
                samples=len(values),
                batches_after_baseline=0,
                reason=f"baseline: {len(values)} of {config.baseline_window} scores collected",
            )
        start = config.baseline_window
    tracks = [score_track(values, start, baseline, config)]
    tracks += [
        track
        for name in sorted(baseline.fail_rates)
        if name in checks
        if (track := check_track(name, checks[name], start, baseline, config)) is not None
    ]
    worst = max(tracks, key=lambda t: (_SEVERITY[t.state], -(t.alarm_at or 0), t.level))
    others = [
        f"check {t.name}" if t.name else "score CUSUM"
        for t in tracks
        if t is not worst and t.state == worst.state
    ]
    if others and worst.state != "ok":
        reason = f"{worst.reason}; also {', '.join(others)}"
    else:
        reason = worst.reason
    return DriftResult(
        state=worst.state,
        statistic=tracks[0].current,
        bernoulli={t.name: t.current for t in tracks[1:]},
        baseline=baseline,
        samples=len(values),
        batches_after_baseline=(len(values) - start) // config.batch_size,
        reason=reason,
        alarm_at=min((t.alarm_at for t in tracks if t.alarm_at is not None), default=None),
    )


# --- internals ---------------------------------------------------------------------------------


def _as_scores(scores: Sequence[float]) -> np.ndarray:
    values = np.asarray(scores, dtype=float).reshape(-1)
    if values.size and not (np.isfinite(values).all() and 0 <= values.min() <= values.max() <= 1):
        raise ValueError("scores must be finite numbers in [0, 1]")
    return values


def _as_passes(passes: Mapping[str, Sequence[bool | None]] | None, n: int) -> dict[str, np.ndarray]:
    """Each check as floats: 1.0 failed, 0.0 passed, NaN not applicable."""
    out: dict[str, np.ndarray] = {}
    for name, seq in (passes or {}).items():
        if len(seq) != n:
            raise ValueError(f"passes[{name!r}] has {len(seq)} entries for {n} scores")
        out[name] = np.array([_outcome(name, v) for v in seq], dtype=float)
    return out


def _outcome(name: str, value: bool | None) -> float:
    if value is None:
        return math.nan
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"passes[{name!r}] holds {value!r}; expected True, False or None")
    return 0.0 if value else 1.0


def _baseline(
    values: np.ndarray, checks: dict[str, np.ndarray], config: DriftConfig
) -> Baseline | None:
    n, size = config.baseline_window, config.batch_size
    if len(values) < n:
        return None
    window = values[:n]
    means = window.reshape(-1, size).mean(axis=1)
    mean = float(window.mean())
    mad = MAD_TO_SD * float(np.median(np.abs(means - np.median(means))))
    variance = max(float(window.var(ddof=1)), (mean**2 + (1 - mean) ** 2) / (2 * (n + 1)))
    sigma = max(mad, math.sqrt(variance / size), config.min_sigma)
    rates: dict[str, float] = {}
    counts: dict[str, int] = {}
    for name, obs in checks.items():
        seen = obs[:n][~np.isnan(obs[:n])]
        if len(seen) >= config.min_check_samples:
            rates[name], counts[name] = float(seen.mean()), len(seen)
    return Baseline(
        mean=min(max(mean, 0.0), 1.0),
        sigma=sigma,
        samples=n,
        batches=n // size,
        fail_rates=rates,
        check_samples=counts,
    )
