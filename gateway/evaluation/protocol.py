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
    """Quality of one alias (or base model) and version under the current rubric epoch."""

    alias: str
    version: str
    epoch: str | None
    samples: int
    scored: int
    mean_score: float | None
    baseline_mean: float | None = Field(description="The alias's drift baseline (per epoch).")
    baseline_sigma: float | None
    check_pass_rates: dict[str, float]
    drift_state: DriftState
    drift_statistic: float | None
    feedback: int
    feedback_mean: float | None


class EvalSummary(BaseModel):
    object: Literal["eval.summary"] = "eval.summary"
    data: list[VersionSummary]
    queue_depth: int
    decisions: dict[str, int] = Field(description="Sampler decisions by reason since start.")


class ScorePoint(BaseModel):
    at: datetime
    mean: float
    count: int


class ScoreSeries(BaseModel):
    alias: str
    version: str
    points: list[ScorePoint]
    baseline_mean: float | None
    baseline_sigma: float | None


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
