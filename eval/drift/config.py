"""Drift settings and results: ``DriftConfig`` (how drift is judged), ``Baseline`` (what the
baseline window showed, persisted per alias and epoch) and ``DriftResult`` (the verdict)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

logger = logging.getLogger("tuneloop.eval.drift")

DriftState = Literal["baseline", "ok", "warning", "drift"]


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
