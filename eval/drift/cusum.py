"""The CUSUM tracks behind a verdict: the downward score CUSUM over batch means and one
Bernoulli CUSUM per pass/fail check, each reduced to a state and one line of why."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from eval.drift.config import Baseline, DriftConfig, DriftState
from eval.drift.stats import fail_rate_bound, sigma_allowance


@dataclass(frozen=True)
class Track:
    name: str  # "" for the score CUSUM, else the check
    label: str
    state: DriftState
    current: float
    level: float  # current / threshold, to rank warnings
    alarm_at: int | None
    reason: str


def _cusum(increments: np.ndarray) -> np.ndarray:
    """S_i = max(0, S_{i-1} + x_i), S_0 = 0, for every i at once (Lindley's recursion)."""
    total = np.cumsum(increments)
    return total - np.minimum(np.minimum.accumulate(total), 0.0)


def score_track(values: np.ndarray, start: int, base: Baseline, config: DriftConfig) -> Track:
    size = config.batch_size
    batches = (len(values) - start) // size
    means = values[start : start + batches * size].reshape(-1, size).mean(axis=1)
    scale = base.sigma * sigma_allowance(base.batches, confidence=config.estimate_confidence)
    stat = _cusum((base.mean - means) / scale - config.k)
    ends = start + (np.arange(batches) + 1) * size - 1  # each batch's last sample
    unit, figure = "batches", f"mean {{:.2f}} vs baseline {base.mean:.2f}"
    return _track("", "score CUSUM", stat, config.h, means, ends, unit, figure, base.mean)


def check_track(
    name: str, obs: np.ndarray, start: int, base: Baseline, config: DriftConfig
) -> Track | None:
    rate = base.fail_rates[name]
    p0 = fail_rate_bound(rate, base.check_samples[name], config.estimate_confidence)
    p1 = config.bernoulli_p1 if config.bernoulli_p1 is not None else p0 + max(p0, 0.1) * (1 - p0)
    if p1 <= p0:
        return None
    where = start + np.flatnonzero(~np.isnan(obs[start:]))
    failed = obs[where]
    stat = _cusum(np.where(failed == 1.0, math.log(p1 / p0), math.log((1 - p1) / (1 - p0))))
    label, figure = f"check {name}: Bernoulli CUSUM", f"fail rate {{:.2f}} vs baseline {rate:.2f}"
    return _track(name, label, stat, config.bernoulli_h, failed, where, "samples", figure, rate)


def _track(
    name: str,
    label: str,
    stat: np.ndarray,
    h: float,
    series: np.ndarray,
    ends: np.ndarray,
    unit: str,
    figure: str,
    baseline_value: float,
) -> Track:
    """State of one CUSUM, and one line on it: the figure is averaged over the excursion that
    tripped it (drift), the current excursion (warning) or everything (ok)."""
    current = float(stat[-1]) if stat.size else 0.0
    crossed = np.flatnonzero(stat > h)
    if crossed.size:
        state: DriftState = "drift"
        at, bound = int(crossed[0]), f"> h={h:g}"
    elif current > h / 2:
        state, at, bound = "warning", len(stat) - 1, f"> h/2={h / 2:g}"
    else:
        shown = float(series.mean()) if series.size else baseline_value
        reason = f"{label} {current:.1f} <= h/2={h / 2:g} over {len(stat)} {unit} ("
        reason += figure.format(shown) + ")"
        return Track(name, label, "ok", current, current / h, None, reason)
    zeros = np.flatnonzero(stat[: at + 1] == 0)
    run = series[(int(zeros[-1]) + 1 if zeros.size else 0) : at + 1]
    reason = f"{label} {float(stat[at]):.1f} {bound} after {at + 1} {unit} ("
    reason += figure.format(float(run.mean())) + ")"
    alarm = int(ends[at]) if state == "drift" else None
    return Track(name, label, state, current, current / h, alarm, reason)
