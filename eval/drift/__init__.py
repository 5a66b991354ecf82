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

from eval.drift.config import Baseline, DriftConfig, DriftResult, DriftState
from eval.drift.detect import MAD_TO_SD, compute_baseline, detect
from eval.drift.stats import sigma_allowance

__all__ = [
    "MAD_TO_SD",
    "Baseline",
    "DriftConfig",
    "DriftResult",
    "DriftState",
    "compute_baseline",
    "detect",
    "sigma_allowance",
]
