"""Drift detection quality: delay to catch a planted drop, false alarms on stable streams.

Streams look like rubric scores: per-sample scores from a Beta distribution (concentration 8,
sd about 0.13) around a mean of 0.8, whose mean also shifts from batch to batch (normal, sd
``--batch-sd``, 0.02 by default: traffic changes, so batch means vary more than independent
samples would make them). Every run has its own seed; figures are over ``--runs`` runs.

1. Delay: 200 baseline scores, 500 stable ones, then the mean drops by 0.2. Delay is samples
   from the change to the alarm (median; runs that alarmed before the change are counted apart).
2. False alarms: 200 baseline scores then 10k stable ones; the share of runs that alarm at all.
3. The same for a pass/fail check (Bernoulli CUSUM): pass rate 0.98, then 0.7.
4. Baselines, same streams: a fixed threshold (alarm on the first batch mean below
   ``baseline mean - 3 sigma``) and the textbook CUSUM (k = 0.5, h = 5 on the point estimate of
   sigma, no allowance for a short baseline).

Prints ``name: value`` lines; the last is our median delay over the fixed threshold's.
Targets (drift issue): delay <= 200 samples, false alarms < 1% over 10k stable samples.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.drift import DriftConfig, compute_baseline, detect  # noqa: E402

BASELINE, STABLE, AFTER, LONG = 200, 500, 600, 10_000
Detector = Callable[[np.ndarray, list[bool] | None], int | None]  # index of the alarm, or None


def scores(rng: np.random.Generator, mean: np.ndarray, batch: int, batch_sd: float) -> np.ndarray:
    shift = np.repeat(rng.normal(0.0, batch_sd, -(-len(mean) // batch)), batch)[: len(mean)]
    mu = np.clip(mean + shift, 0.02, 0.98)
    return rng.beta(8 * mu, 8 * (1 - mu))


def cusum(config: DriftConfig) -> Detector:
    def run(stream: np.ndarray, passes: list[bool] | None) -> int | None:
        checks = None if passes is None else {"json_valid": passes}
        return detect(stream, config=config, passes=checks).alarm_at

    return run


def fixed_threshold(config: DriftConfig) -> Detector:
    def run(stream: np.ndarray, passes: list[bool] | None) -> int | None:
        base = compute_baseline(stream, config=config)
        assert base is not None
        size, after = config.batch_size, stream[config.baseline_window :]
        means = after[: len(after) // size * size].reshape(-1, size).mean(axis=1)
        below = np.flatnonzero(means < base.mean - 3 * base.sigma)
        return config.baseline_window + (int(below[0]) + 1) * size - 1 if below.size else None

    return run


def delay(
    detector: Detector, runs: int, batch_sd: float, seed: int, *, drop: float = 0.2
) -> tuple[float, float]:
    """Median samples from the change to the alarm (inf when missed), share alarming early."""
    change, delays, early = BASELINE + STABLE, [], 0
    for run in range(runs):
        rng = np.random.default_rng(seed + run)
        mean = np.r_[np.full(change, 0.8), np.full(AFTER, 0.8 - drop)]
        alarm = detector(scores(rng, mean, 25, batch_sd), None)
        if alarm is not None and alarm < change:
            early += 1
        else:
            delays.append(np.inf if alarm is None else alarm - change + 1)
    return float(np.median(delays)), early / runs


def false_alarms(detector: Detector, runs: int, batch_sd: float, seed: int) -> float:
    n, alarms = BASELINE + LONG, 0
    for run in range(runs):
        rng = np.random.default_rng(seed + run)
        alarms += detector(scores(rng, np.full(n, 0.8), 25, batch_sd), None) is not None
    return alarms / runs


def bernoulli(config: DriftConfig, runs: int, seed: int) -> tuple[float, float]:
    """Median delay for a pass rate 0.98 -> 0.7, and false alarms over 10k at 0.98."""
    detector, change, delays, alarms = cusum(config), BASELINE + STABLE, [], 0
    for run in range(runs):
        rng = np.random.default_rng(seed + run)
        flat = np.full(BASELINE + LONG, 0.8)
        alarms += detector(flat, [bool(x) for x in rng.random(len(flat)) < 0.98]) is not None
        rate = np.r_[np.full(change, 0.98), np.full(AFTER, 0.7)]
        alarm = detector(np.full(len(rate), 0.8), [bool(x) for x in rng.random(len(rate)) < rate])
        delays.append(np.inf if alarm is None or alarm < change else alarm - change + 1)
    return float(np.median(delays)), alarms / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="Seeded runs for delays.")
    parser.add_argument("--fa-runs", type=int, default=500, help="Seeded runs for false alarms.")
    parser.add_argument("--batch-sd", type=float, default=0.02, help="Batch-to-batch mean sd.")
    args = parser.parse_args()
    started = time.perf_counter()
    ours, textbook = DriftConfig(), DriftConfig(k=0.5, h=5.0, estimate_confidence=None)
    print(f"batch_sd: {args.batch_sd:g}")
    figures: dict[str, float] = {}
    for name, detector in [
        ("cusum", cusum(ours)),
        ("fixed_threshold", fixed_threshold(ours)),
        ("textbook_cusum", cusum(textbook)),
    ]:
        median, early = delay(detector, args.runs, args.batch_sd, seed=1)
        rate = false_alarms(detector, args.fa_runs, args.batch_sd, seed=100_000)
        figures[name] = median
        print(f"{name}_delay_samples_median: {median:g}")
        print(f"{name}_alarms_before_change: {early:.3f}")
        print(f"{name}_false_alarm_rate_10k: {rate:.4f}")
    small, _ = delay(cusum(ours), args.runs, args.batch_sd, seed=400_000, drop=0.1)
    print(f"cusum_delay_samples_median_drop_0.1: {small:g}")
    heavy = false_alarms(cusum(ours), args.fa_runs, 2 * args.batch_sd, seed=200_000)
    print(f"cusum_false_alarm_rate_10k_batch_sd_{2 * args.batch_sd:g}: {heavy:.4f}")
    bern_delay, bern_rate = bernoulli(ours, args.runs, seed=300_000)
    print(f"bernoulli_delay_samples_median_0.98_to_0.7: {bern_delay:g}")
    print(f"bernoulli_false_alarm_rate_10k_at_0.98: {bern_rate:.4f}")
    print(f"wall_seconds: {time.perf_counter() - started:.1f}")
    print(f"ratio_delay_vs_fixed_threshold: {figures['cusum'] / figures['fixed_threshold']:.2f}")


if __name__ == "__main__":
    main()
