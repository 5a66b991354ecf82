"""Hand-built dashboard data and a minimal app around the dashboard router, for its tests.

The real data comes from the evaluation service on ``app.state.eval``; these fakes answer the
same two calls (``dashboard_data`` and ``sample``) with values built here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from gateway.dashboard import DashboardPages
from gateway.dashboard import api_router as dashboard_router
from gateway.evaluation.protocol import (
    AliasDriftSummary,
    CheckResult,
    DashboardData,
    EvalSummary,
    EventRow,
    LoopJob,
    SamplePage,
    SampleRecord,
    ScorePoint,
    ScoreSeries,
    TrafficRow,
    VersionSummary,
)
from gateway.exceptions import GatewayError, NotFound
from gateway.http import error_response
from gateway.settings import Settings

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
EXTRACT_PROMPT = "Extract the invoice number and total from: Invoice INV-2041, total due 318.40 EUR"


def sample(
    sample_id: int,
    *,
    at: datetime,
    alias: str = "extract",
    version: str = "v4",
    text: str = EXTRACT_PROMPT,
    response: str = '{"invoice": "INV-2041", "total": 318.4}',
    score: float | None = 0.92,
) -> SampleRecord:
    return SampleRecord(
        id=sample_id,
        request_id=f"req-{sample_id:04d}",
        at=at,
        alias=alias,
        version=version,
        endpoint="/v1/chat/completions",
        request={
            "messages": [
                {"role": "system", "content": "Answer with JSON only."},
                {"role": "user", "content": text},
            ],
            "temperature": 0,
            "response_format": {"type": "json_object"},
        },
        response=response,
        status=200,
        latency_ms=412.5 + sample_id,
        prompt_tokens=58,
        completion_tokens=21,
        score=score,
        epoch="ep-3f9a1c",
        checks=[
            CheckResult(name="valid_json", type="json_schema", weight=2, score=1.0, passed=True),
            CheckResult(
                name="total_matches",
                type="regex",
                weight=1,
                score=0.0 if score is not None and score < 0.7 else 1.0,
                passed=not (score is not None and score < 0.7),
                detail="expected a number in 'total'",
            ),
            CheckResult(name="judge_helpful", type="judge", weight=1, score=None, passed=None),
        ],
        feedback=[{"score": 1.0, "label": "correct", "comment": "spot on"}]
        if sample_id % 3
        else [],
    )


TRAINER_ERROR = "RuntimeError: the trainer exited with 1 (log: /data/loop/jobs/job-6.log)"


def loop_jobs(now: datetime = NOW) -> list[LoopJob]:
    """Three retrain jobs, newest first: promoted, failed in training, rejected by the gate."""
    return [
        LoopJob(
            id=7,
            alias="extract",
            state="promoted",
            trigger="drift",
            dataset_hash="9c1e0b7d4a2f6e13",
            served_name="extract@v5",
            verdict={
                "promote": True,
                "reason": "promote: mean diff +0.215, 95% CI [+0.171, +0.262]",
                "mean_champion": 0.688,
                "mean_challenger": 0.903,
                "mean_diff": 0.215,
                "ci_low": 0.171,
                "ci_high": 0.262,
                "check_pass_rates": {"valid_json": {"champion": 0.88, "challenger": 1.0}},
                "shadow_mean": 0.911,
                "champion_live_mean": 0.702,
                "n": 40,
            },
            created_at=now - timedelta(minutes=20),
            finished_at=now - timedelta(minutes=1),
            detail={
                "dataset": 3.2,
                "training": 412.7,
                "gate": 58.4,
                "canary": 95.0,
                "canary_numbers": {
                    "canary_samples": 12,
                    "canary_mean": 0.897,
                    "champion_mean": 0.705,
                },
            },
        ),
        LoopJob(
            id=6,
            alias="support-bot",
            state="failed",
            trigger="schedule",
            dataset_hash="51ab07c2e9d84f60",
            error=TRAINER_ERROR,
            created_at=now - timedelta(hours=2),
            finished_at=now - timedelta(hours=2) + timedelta(minutes=3),
            detail={"dataset": 2.5},
        ),
        LoopJob(
            id=5,
            alias="extract",
            state="rejected",
            trigger="manual",
            dataset_hash="e4f00a91c3b2d775",
            served_name="extract@v4-job5",
            verdict={
                "promote": False,
                "reason": "reject: 95% CI [-0.041, +0.015] of the mean diff includes 0",
                "mean_champion": 0.905,
                "mean_challenger": 0.892,
                "mean_diff": -0.013,
                "ci_low": -0.041,
                "ci_high": 0.015,
                "check_pass_rates": {},
                "shadow_mean": None,
                "champion_live_mean": None,
                "n": 40,
            },
            created_at=now - timedelta(hours=5),
            finished_at=now - timedelta(hours=4),
            detail={"dataset": 4.1, "training": 388.0, "gate": 61.9},
        ),
    ]


def demo_data(
    *, now: datetime = NOW, extra_samples: list[SampleRecord] | None = None
) -> DashboardData:
    """Three aliases (extract drifting after a canary; support-bot still collecting its
    baseline; summarize ok, in the summary only), traffic, events, samples and loop jobs."""
    minutes = 30

    def wave(base: int, step: int) -> list[int]:
        return [base + (i * step) % 7 for i in range(minutes)]

    def points(start: float, drop_after: int | None = None) -> list[ScorePoint]:
        result = []
        for i in range(24):
            mean = start + 0.02 * ((i * 5) % 3 - 1)
            if drop_after is not None and i >= drop_after:
                mean -= 0.22
            result.append(ScorePoint(at=now - timedelta(minutes=5 * (24 - i)), mean=mean, count=12))
        return result

    samples = [
        sample(100 - i, at=now - timedelta(seconds=40 * i), version="v4" if i % 2 else "v3",
               score=0.61 if i % 4 == 1 else 0.93)
        for i in range(8)
    ]  # fmt: skip
    samples.append(
        sample(
            80,
            at=now - timedelta(minutes=9),
            alias="support-bot",
            version="v1",
            text="My order #5512 never arrived, can you help?",
            response="I'm sorry to hear that! I've opened a ticket for order #5512.",
            score=0.81,
        )
    )
    return DashboardData(
        generated_at=now,
        traffic=[
            TrafficRow(
                model="extract",
                version="v3",
                requests=812,
                errors=3,
                p50_ms=388.0,
                p95_ms=1210.0,
                prompt_tokens=48_120,
                completion_tokens=17_400,
                json_violations=0,
                per_minute=wave(22, 3),
            ),
            TrafficRow(
                model="extract",
                version="v4",
                requests=204,
                errors=9,
                p50_ms=402.0,
                p95_ms=1530.0,
                prompt_tokens=12_010,
                completion_tokens=4_480,
                json_violations=5,
                per_minute=wave(5, 2),
            ),
            TrafficRow(
                model="support-bot",
                version="v1",
                requests=356,
                errors=0,
                p50_ms=951.0,
                p95_ms=2480.0,
                prompt_tokens=61_900,
                completion_tokens=39_800,
                json_violations=0,
                per_minute=wave(10, 5),
            ),
        ],  # fmt: skip
        summary=EvalSummary(
            data=[
                VersionSummary(
                    alias="extract",
                    version="v3",
                    epoch="ep-3f9a1c",
                    samples=162,
                    scored=160,
                    mean_score=0.912,
                    check_pass_rates={"valid_json": 1.0, "total_matches": 0.94},
                    feedback=14,
                    feedback_mean=0.93,
                ),
                VersionSummary(
                    alias="extract",
                    version="v4",
                    epoch="ep-3f9a1c",
                    samples=41,
                    scored=40,
                    mean_score=0.688,
                    check_pass_rates={"valid_json": 0.88, "total_matches": 0.55},
                    feedback=3,
                    feedback_mean=0.33,
                ),
                VersionSummary(
                    alias="support-bot",
                    version="v1",
                    epoch="ep-77b0d2",
                    samples=71,
                    scored=70,
                    mean_score=0.814,
                    check_pass_rates={"polite": 0.97, "judge_helpful": 0.79},
                    feedback=0,
                    feedback_mean=None,
                ),
                VersionSummary(
                    alias="summarize",
                    version="v2",
                    epoch="ep-51c0aa",
                    samples=90,
                    scored=90,
                    mean_score=0.866,
                    check_pass_rates={"short_enough": 0.99},
                    feedback=2,
                    feedback_mean=1.0,
                ),
            ],  # fmt: skip
            aliases=[
                AliasDriftSummary(
                    alias="extract",
                    epoch="ep-3f9a1c",
                    drift_state="drift",  # since the canary v4 took traffic
                    drift_statistic=6.4,
                    baseline_mean=0.905,
                    baseline_sigma=0.031,
                    version="v4",
                ),
                AliasDriftSummary(
                    alias="support-bot",
                    epoch="ep-77b0d2",
                    drift_state="baseline",
                    drift_statistic=None,
                    baseline_mean=None,
                    baseline_sigma=None,
                    version="v1",
                ),
                AliasDriftSummary(
                    alias="summarize",  # quiet today: no recent traffic, no scores in 24 h
                    epoch="ep-51c0aa",
                    drift_state="ok",
                    drift_statistic=0.8,
                    baseline_mean=0.871,
                    baseline_sigma=0.024,
                    version="v2",
                ),
            ],  # fmt: skip
            queue_depth=3,
            decisions={"sampled": 274, "rate": 1098},
        ),
        scores=[
            ScoreSeries(
                alias="extract",
                version="v3",
                points=points(0.91),
            ),
            ScoreSeries(
                alias="extract",
                version="v4",
                points=points(0.9, drop_after=14)[12:],
            ),
            ScoreSeries(
                alias="support-bot",
                version="v1",
                points=points(0.8),
            ),
        ],  # fmt: skip
        events=[
            EventRow(
                at=now - timedelta(minutes=2),
                kind="drift_state_changed",
                subject="extract",
                detail={"from": "warning", "to": "drift", "statistic": 6.4},
            ),
            EventRow(
                at=now - timedelta(minutes=61),
                kind="alias_set",
                subject="extract",
                detail={
                    "targets": [{"version": "v3", "weight": 0.8}, {"version": "v4", "weight": 0.2}]
                },
            ),
            EventRow(
                at=now - timedelta(hours=3),
                kind="adapter_registered",
                subject="extract@v4",
                detail={"dataset_hash": "9c1e0b7d"},
            ),
        ],  # fmt: skip
        samples=SamplePage(data=samples + (extra_samples or [])),
        jobs=loop_jobs(now),
    )


class FakeEval:
    """Answers the dashboard's two calls from fixed values, recording what was asked."""

    def __init__(self, data: DashboardData) -> None:
        self.data = data
        self.calls: list[dict[str, object]] = []

    async def dashboard_data(self, *, alias: str | None = None, sample_limit: int = 50):
        self.calls.append({"alias": alias, "sample_limit": sample_limit})
        return self.data

    async def sample(self, sample_id: int) -> SampleRecord:
        for record in self.data.samples.data:
            if record.id == sample_id:
                return record
        raise NotFound(f"No sample {sample_id}.")


def dashboard_app(*, admin_token: str | None, data: DashboardData | None = None) -> FastAPI:
    """Only the dashboard router, with a fake evaluation service and the app's error shape."""
    app = FastAPI()
    app.state.settings = Settings(admin_token=admin_token)
    app.state.eval = FakeEval(data or demo_data())
    app.state.dashboard = DashboardPages()
    app.include_router(dashboard_router.router)

    @app.exception_handler(GatewayError)
    async def gateway_error(_request: Request, exc: GatewayError) -> JSONResponse:
        return error_response(exc)

    return app
