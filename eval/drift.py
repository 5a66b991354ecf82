"""Drift detection over a stream of rubric scores: pure functions, no I/O, no clock.

A stream starts where its baseline starts (an alias under one rubric epoch; the baseline
restarts only on a rubric change, a promotion or an operator's acknowledgement). Its first
window of ``baseline_samples`` scores, rounded up to whole batches, is the baseline.

Scores (0..1, in arrival order) are grouped in batches of ``batch_size``; an incomplete trailing
batch is left for the next call. The baseline holds the mean score, ``sigma`` (the standard
deviation of one batch mean) and, for each pass/fail check, its failure rate. ``sigma`` is the
largest of:

- ``1.4826 * MAD`` of the baseline batch means (robust to one odd batch; catches batch-to-batch
  variation such as a changing prompt mix);
- the per-sample standard deviation over ``sqrt(batch_size)`` (what independent samples alone
  give; 200 samples estimate it well, so a lucky small MAD cannot shrink sigma below it). The
  per-sample variance is floored at ``(mean**2 + (1 - mean)**2) / (2 * (n + 1))``, the variance
  half a sample more at each end of the scale would add, so a constant baseline (all 1.0) still
  gets a finite, small sigma;
- ``min_sigma``.

Score CUSUM (one-sided, downward): ``z_i = (baseline.mean - batch_mean_i) / scale`` and
``S_i = max(0, S_{i-1} + z_i - k)``. ``scale`` is sigma times an allowance for having estimated
mean and sigma from only m baseline batches: ``sqrt((1 + 1/m) * (m - 1) / chi2(1 - c, m - 1))``,
the upper ``c``-confidence bound of sigma widened by the mean's own error (1.91 for the default
8 batches at c = 0.95; it tends to 1 as the baseline grows). Without it a 200-sample baseline
makes the textbook k = 0.5, h = 5 alarm on about half of all stable 10k-sample streams (see
``bench/eval_drift.py``); with it and k = 1, h = 6 the rate is well under 1% while a 0.2 drop is
still caught within about 75 samples.

Bernoulli CUSUM, per check, per applicable observation: the failure rate p0 is the upper
``c``-confidence (Wilson) bound of the baseline rate; the alternative is ``bernoulli_p1`` or, by
default, ``p1 = p0 + max(p0, 0.1) * (1 - p0)`` (the pass rate falls by a tenth of itself, or by
p0 if larger). Each observation adds ``log(p1/p0)`` on a failure, ``log((1-p1)/(1-p0))`` on a
pass; the statistic is floored at 0.

States: ``baseline`` (the window is not full yet), ``ok``, ``warning`` (a statistic is now above
h/2) and ``drift`` (a statistic has crossed h since the baseline started: drift is latched, so
the answer does not depend on when the caller looks; restarting the baseline clears it). A
stream's state is the worst of its score CUSUM and its checks' CUSUMs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

logger = logging.getLogger("tuneloop.eval.drift")

DriftState = Literal["baseline", "ok", "warning", "drift"]
MAD_TO_SD = 1.4826
_SEVERITY: dict[str, int] = {"baseline": 0, "ok": 1, "warning": 2, "drift": 3}


def _opt(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with help text in its metadata (PEFT-style)."""
    if "default_factory" not in kwargs:
        kwargs["default"] = default
    return field(metadata={"help": help}, **kwargs)


def _req(help: str) -> Any:
    return field(metadata={"help": help})


def _known_keys(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        logger.warning("%s: ignoring unknown keys %s", cls.__name__, ", ".join(unknown))
    return {key: value for key, value in data.items() if key in names}


@dataclass(frozen=True)
class DriftConfig:
    """How drift is judged. Validated on construction; ``to_dict``/``from_dict`` round-trip."""

    baseline_samples: int = _opt(
        200, "Scores in the baseline window, rounded up to whole batches; at least 2 batches."
    )
    batch_size: int = _opt(
        25, "Scores averaged into one batch mean; the score CUSUM takes one step per batch."
    )
    k: float = _opt(1.0, "Score CUSUM reference value, in allowance-widened batch sigmas.")
    h: float = _opt(6.0, "Score CUSUM decision threshold: drift above h, warning above h/2.")
    bernoulli_h: float = _opt(
        12.0,
        "Bernoulli CUSUM threshold (a log-likelihood ratio) for pass/fail checks; the default "
        "keeps false alarms under 1% over 10k stable observations.",
    )
    bernoulli_p1: float | None = _opt(
        None,
        "Failure rate to detect, for every check; None: p0 + max(p0, 0.1) * (1 - p0). A check "
        "whose baseline p0 is not below it is not monitored.",
    )
    estimate_confidence: float | None = _opt(
        0.95,
        "One-sided confidence of the bounds put on baseline estimates (sigma and failure rates, "
        "both upward) so a short baseline does not cause false alarms; None: point estimates.",
    )
    min_sigma: float = _opt(1e-3, "Smallest batch sigma, in score units.")
    min_check_samples: int = _opt(
        20, "Applicable observations a check needs in the baseline window to be monitored."
    )

    def __post_init__(self) -> None:
        for name in ("baseline_samples", "batch_size", "min_check_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("k", "h", "bernoulli_h", "min_sigma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0 or (value == 0 and name != "k"):
                raise ValueError(f"{name} must be finite and positive, got {value!r}")
        if self.baseline_samples < 2 * self.batch_size:
            raise ValueError(
                f"baseline_samples ({self.baseline_samples}) must be at least two batches "
                f"(2 * batch_size = {2 * self.batch_size}) so sigma can be estimated"
            )
        if self.bernoulli_p1 is not None and not 0 < self.bernoulli_p1 < 1:
            raise ValueError(f"bernoulli_p1 must be in (0, 1), got {self.bernoulli_p1!r}")
        conf = self.estimate_confidence
        if conf is not None and not 0.5 <= conf < 1:
            raise ValueError(f"estimate_confidence must be in [0.5, 1), got {conf!r}")

    @property
    def baseline_batches(self) -> int:
        """Whole batches in the baseline window."""
        return -(-self.baseline_samples // self.batch_size)

    @property
    def baseline_window(self) -> int:
        """Scores in the baseline window: ``baseline_samples`` rounded up to whole batches."""
        return self.baseline_batches * self.batch_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftConfig:
        """Build from JSON data; unknown keys are ignored with a warning."""
        return cls(**_known_keys(cls, data))


@dataclass(frozen=True)
class Baseline:
    """What the baseline window showed; the caller persists it (``to_dict``) per alias and epoch."""

    mean: float = _req("Mean score over the baseline window.")
    sigma: float = _req("Estimated standard deviation of one batch mean (floored).")
    samples: int = _req("Scores in the baseline window.")
    batches: int = _req("Batches in the baseline window (at least 2).")
    fail_rates: dict[str, float] = _opt(
        None, "Observed failure rate per monitored pass/fail check.", default_factory=dict
    )
    check_samples: dict[str, int] = _opt(
        None, "Applicable observations behind each failure rate.", default_factory=dict
    )

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean) and 0 <= self.mean <= 1):
            raise ValueError(f"mean must be in [0, 1], got {self.mean!r}")
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"sigma must be finite and positive, got {self.sigma!r}")
        if self.batches < 2 or self.samples < self.batches:
            raise ValueError(f"need at least 2 batches, got {self.batches} ({self.samples} scores)")
        if set(self.fail_rates) != set(self.check_samples):
            raise ValueError("fail_rates and check_samples must name the same checks")
        if any(not 0 <= rate <= 1 for rate in self.fail_rates.values()):
            raise ValueError("fail_rates must be in [0, 1]")
        if any(n < 1 for n in self.check_samples.values()):
            raise ValueError("check_samples must be positive")
        object.__setattr__(self, "fail_rates", dict(self.fail_rates))
        object.__setattr__(self, "check_samples", dict(self.check_samples))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Baseline:
        """Build from JSON data; unknown keys are ignored with a warning."""
        return cls(**_known_keys(cls, data))


@dataclass(frozen=True)
class DriftResult:
    """The verdict on one stream: its state, the statistics behind it and one line of why."""

    state: DriftState
    statistic: float | None  # current score CUSUM; None in the baseline state
    bernoulli: dict[str, float]  # current Bernoulli CUSUM per monitored check
    baseline: Baseline | None
    samples: int  # scores passed in
    batches_after_baseline: int  # whole batches the score CUSUM ran over
    reason: str
    alarm_at: int | None = None  # index into `scores` of the sample that first tripped drift

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sigma_allowance(batches: int, *, confidence: float | None) -> float:
    """Factor on sigma for a baseline of ``batches`` batch means (1.0 when confidence is None)."""
    if confidence is None:
        return 1.0
    if batches < 2:
        raise ValueError(f"need at least 2 baseline batches, got {batches}")
    df = batches - 1
    return math.sqrt((1 + 1 / batches) * df / _chi2_quantile(1 - confidence, df))


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
    tracks = [_score_track(values, start, baseline, config)]
    tracks += [
        track
        for name in sorted(baseline.fail_rates)
        if name in checks
        if (track := _check_track(name, checks[name], start, baseline, config)) is not None
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


@dataclass(frozen=True)
class _Track:
    name: str  # "" for the score CUSUM, else the check
    label: str
    state: DriftState
    current: float
    level: float  # current / threshold, to rank warnings
    alarm_at: int | None
    reason: str


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


def _cusum(increments: np.ndarray) -> np.ndarray:
    """S_i = max(0, S_{i-1} + x_i), S_0 = 0, for every i at once (Lindley's recursion)."""
    total = np.cumsum(increments)
    return total - np.minimum(np.minimum.accumulate(total), 0.0)


def _score_track(values: np.ndarray, start: int, base: Baseline, config: DriftConfig) -> _Track:
    size = config.batch_size
    batches = (len(values) - start) // size
    means = values[start : start + batches * size].reshape(-1, size).mean(axis=1)
    scale = base.sigma * sigma_allowance(base.batches, confidence=config.estimate_confidence)
    stat = _cusum((base.mean - means) / scale - config.k)
    ends = start + (np.arange(batches) + 1) * size - 1  # each batch's last sample
    unit, figure = "batches", f"mean {{:.2f}} vs baseline {base.mean:.2f}"
    return _track("", "score CUSUM", stat, config.h, means, ends, unit, figure, base.mean)


def _check_track(
    name: str, obs: np.ndarray, start: int, base: Baseline, config: DriftConfig
) -> _Track | None:
    rate = base.fail_rates[name]
    p0 = _fail_rate_bound(rate, base.check_samples[name], config.estimate_confidence)
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
) -> _Track:
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
        return _Track(name, label, "ok", current, current / h, None, reason)
    zeros = np.flatnonzero(stat[: at + 1] == 0)
    run = series[(int(zeros[-1]) + 1 if zeros.size else 0) : at + 1]
    reason = f"{label} {float(stat[at]):.1f} {bound} after {at + 1} {unit} ("
    reason += figure.format(float(run.mean())) + ")"
    alarm = int(ends[at]) if state == "drift" else None
    return _Track(name, label, state, current, current / h, alarm, reason)


def _fail_rate_bound(rate: float, n: int, confidence: float | None) -> float:
    """Baseline failure rate for the CUSUM: Wilson upper bound (or Jeffreys point estimate),
    kept half an observation away from 0 and 1 so both log-ratios stay finite."""
    edge = 0.5 / (n + 1)
    if confidence is None:
        p0 = (rate * n + 0.5) / (n + 1)
    else:
        z = NormalDist().inv_cdf(confidence)
        denom = 1 + z * z / n
        centre = (rate + z * z / (2 * n)) / denom
        p0 = centre + z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / denom
    return min(max(p0, edge), 1 - edge)


def _chi2_quantile(p: float, df: int) -> float:
    """Lower-tail chi-square quantile for p <= 0.5, by bisection below df (the median is less)."""
    lo, hi = 0.0, float(df)
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _gamma_p(df / 2, mid / 2) < p else (lo, mid)
    return (lo + hi) / 2


def _gamma_p(a: float, x: float) -> float:
    """Regularized lower incomplete gamma P(a, x) by its power series (fine for x <= a)."""
    if x <= 0:
        return 0.0
    term = total = 1 / a
    for i in range(1, 10_000):
        term *= x / (a + i)
        total += term
        if term < total * 1e-16:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))
