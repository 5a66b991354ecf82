"""Wire models of continuous evaluation: feedback, rubrics, the eval read API, the dashboard.

Requests refuse unknown fields (a typo must not pass silently); responses are plain models.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DriftState = Literal["baseline", "ok", "warning", "drift"]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- feedback (/v1/feedback, inference key) -------------------------------------------------
class FeedbackRequest(StrictModel):
    request_id: str = Field(min_length=1, max_length=128, description="x-request-id of the answer.")
    score: float | None = Field(default=None, ge=0, le=1, description="0 (bad) .. 1 (good).")
    label: str | None = Field(
        default=None, max_length=64, description="Free label, e.g. 'wrong_format'."
    )
    correction: str | None = Field(
        default=None, max_length=32768, description="What the answer should have been."
    )
    comment: str | None = Field(default=None, max_length=4096)


class FeedbackRecord(BaseModel):
    object: Literal["feedback"] = "feedback"
    id: int
    request_id: str
    sampled: bool = Field(description="Whether the request's answer was sampled and stored.")
    created_at: datetime


# --- rubrics (/admin/rubrics/{alias}) --------------------------------------------------------
class RubricRecord(BaseModel):
    alias: str
    version: int
    epoch: str = Field(description="Hash of (rubric, judge model, scorer version).")
    rubric: dict[str, Any]
    created_at: datetime


# --- the read API (/admin/eval/*) ------------------------------------------------------------
class CheckResult(BaseModel):
    name: str
    type: str
    weight: float
    score: float | None = Field(description="0..1, or null when not applicable.")
    passed: bool | None = None
    detail: str | None = None


class SampleRecord(BaseModel):
    """One sampled request, PII already scrubbed, with its score and feedback."""

    id: int
    request_id: str
    at: datetime
    alias: str
    version: str
    endpoint: str
    request: dict[str, Any] = Field(description="The client's messages/prompt, scrubbed.")
    response: str | None = Field(description="The final answer text, scrubbed.")
    retrieved: list[str] = Field(default_factory=list, description="Retrieved chunk ids.")
    status: int
    latency_ms: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    score: float | None = None
    epoch: str | None = None
    checks: list[CheckResult] = Field(default_factory=list)
    feedback: list[dict[str, Any]] = Field(default_factory=list)


class SamplePage(BaseModel):
    object: Literal["list"] = "list"
    data: list[SampleRecord]
    next_before: int | None = Field(
        default=None, description="Pass as ?before= for the next (older) page."
    )


class VersionSummary(BaseModel):
    """Quality of one alias (or base model) and version under the current rubric epoch: the
    version's own figures only; drift belongs to the alias (``AliasDriftSummary``)."""

    alias: str
    version: str
    epoch: str | None = Field(description="The alias's current rubric epoch; null without one.")
    samples: int = Field(description="Samples stored in the summary window.")
    scored: int = Field(description="Of those, scored under the current epoch.")
    mean_score: float | None = Field(description="Mean rubric total of this version's scores.")
    check_pass_rates: dict[str, float] = Field(description="Pass rate of each check, 0..1.")
    feedback: int = Field(description="Client feedback received in the summary window.")
    feedback_mean: float | None = Field(description="Mean feedback score of those with one.")


class AliasDriftSummary(BaseModel):
    """The drift state of one alias: its baseline belongs to the alias and the rubric epoch,
    never to a version, so it is shown once, beside its versions' own figures. The defaults
    are an alias with no baseline yet (or no rubric)."""

    alias: str
    epoch: str | None = Field(
        default=None, description="The rubric epoch of the baseline; null without a rubric."
    )
    drift_state: DriftState = Field(
        default="baseline", description="baseline (still collecting), ok, warning or drift."
    )
    drift_statistic: float | None = Field(
        default=None,
        description="The score CUSUM when the alias entered this state; null before a baseline.",
    )
    baseline_mean: float | None = Field(
        default=None, description="Mean score of the baseline window."
    )
    baseline_sigma: float | None = Field(
        default=None, description="Sigma of one batch mean in the baseline window."
    )
    version: str | None = Field(
        default=None,
        description="The version the alias's latest scored sample (current epoch, summary "
        "window) came from; null when none.",
    )


class EvalSummary(BaseModel):
    object: Literal["eval.summary"] = "eval.summary"
    data: list[VersionSummary] = Field(description="One row per (alias, version): its figures.")
    aliases: list[AliasDriftSummary] = Field(
        default_factory=list, description="One entry per alias: its drift state and baseline."
    )
    queue_depth: int
    decisions: dict[str, int] = Field(description="Sampler decisions by reason since start.")


class ScorePoint(BaseModel):
    at: datetime
    mean: float
    count: int


class ScoreSeries(BaseModel):
    """Mean score over time of one alias and version (the baseline is the alias's, in
    ``EvalSummary.aliases``)."""

    alias: str
    version: str
    points: list[ScorePoint]


class TrafficRow(BaseModel):
    """Live traffic of one model/version over the gateway's recent window (all requests)."""

    model: str
    version: str
    requests: int
    errors: int
    p50_ms: float | None
    p95_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    json_violations: int
    per_minute: list[int] = Field(description="Requests per minute, oldest first.")


class EventRow(BaseModel):
    at: datetime
    kind: str
    subject: str
    detail: dict[str, Any]


class LoopJob(BaseModel):
    """One retrain job as the dashboard's loop history shows it."""

    id: int
    alias: str
    state: str
    trigger: str
    dataset_hash: str | None = None
    served_name: str | None = None
    verdict: dict[str, Any] | None = None
    error: str | None = None
    created_at: datetime
    finished_at: datetime | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class DashboardData(BaseModel):
    """Everything the dashboard page draws, fetched in one call."""

    generated_at: datetime
    traffic: list[TrafficRow]
    summary: EvalSummary
    scores: list[ScoreSeries]
    events: list[EventRow]
    samples: SamplePage
    jobs: list[LoopJob] = Field(default_factory=list, description="Retrain jobs, newest first.")
