"""Evaluation: traffic sampling, PII scrubbing, rubrics, drift and the evaluation store.

A library: it never imports ``gateway``, ``adapters`` or ``retrieval``; what it needs from
them (an embedder, a judge model call) is passed in as a callable.
"""

from eval.drift import Baseline, DriftConfig, DriftResult, compute_baseline, detect
from eval.pii import Finding, Scrubber, ScrubberConfig
from eval.rubrics import (
    Rubric,
    RubricError,
    ScoreInput,
    Scorer,
    ScoreResult,
    evaluator_epoch,
    parse_rubric,
)
from eval.sampling import SamplingPolicy, fraction
from eval.store import EvalStore, SampleQuery, ScoredItem

__all__ = [
    "Baseline",
    "DriftConfig",
    "DriftResult",
    "EvalStore",
    "Finding",
    "Rubric",
    "RubricError",
    "SampleQuery",
    "SamplingPolicy",
    "ScoreInput",
    "ScoreResult",
    "ScoredItem",
    "Scorer",
    "Scrubber",
    "ScrubberConfig",
    "compute_baseline",
    "detect",
    "evaluator_epoch",
    "fraction",
    "parse_rubric",
]
