"""Read models of continuous evaluation: the summary, score series and the dashboard's data."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.registry import EventRecord
from eval.store import SampleQuery, ScoredItem
from gateway.evaluation.protocol import (
    AliasDriftSummary,
    DashboardData,
    EvalSummary,
    EventRow,
    LoopJob,
    SamplePage,
    SampleRecord,
    ScorePoint,
    ScoreSeries,
    VersionSummary,
)
from gateway.evaluation.service import EvalService
from gateway.exceptions import NotFound
from gateway.traffic import TrafficWindow

SUMMARY_WINDOW = timedelta(days=7)
SERIES_WINDOW = timedelta(hours=24)
SERIES_POINTS = 40


class EvalViews:
    def __init__(
        self,
        service: EvalService,
        traffic: TrafficWindow,
        events: Callable[[int], list[EventRecord]],
    ) -> None:
        self._service = service
        self._store = service.store
        self._traffic = traffic
        self._events = events  # (limit) -> the audit log, newest first
        self.retrain_jobs: Callable[[int], list[Any]] | None = None  # (limit) -> loop jobs

    async def summary(self) -> EvalSummary:
        return await asyncio.to_thread(self._summary)

    def _baselines(self) -> dict[str, dict]:
        return {
            alias: self._store.baseline(alias, active.record.epoch)
            for alias, active in self._service.active_rubrics().items()
        }

    def _summary(self) -> EvalSummary:
        since = datetime.now(UTC) - SUMMARY_WINDOW
        epochs = {a: r.record.epoch for a, r in self._service.active_rubrics().items()}
        baselines = self._baselines()
        counts = self._store.sample_counts(since=since)
        feedback = self._store.feedback_stats(since=since)
        groups = self._store.score_groups(since=since)
        rows = []
        for alias, version in sorted(set(counts) | set(feedback)):
            epoch = epochs.get(alias)
            items = groups.get((alias, version, epoch), []) if epoch else []
            totals = [item.total for item in items if item.total is not None]
            passes: defaultdict[str, list[bool]] = defaultdict(list)
            for item in items:
                for check in item.checks:
                    if check.get("passed") is not None:
                        passes[check["name"]].append(bool(check["passed"]))
            count, feedback_mean = feedback.get((alias, version), (0, None))
            rows.append(
                VersionSummary(
                    alias=alias,
                    version=version,
                    epoch=epoch,
                    samples=counts.get((alias, version), 0),
                    scored=len(totals),
                    mean_score=round(sum(totals) / len(totals), 4) if totals else None,
                    check_pass_rates={
                        name: round(sum(p) / len(p), 4) for name, p in sorted(passes.items())
                    },
                    feedback=count,
                    feedback_mean=round(feedback_mean, 4) if feedback_mean is not None else None,
                )
            )
        names = set(baselines) | {row.alias for row in rows}
        aliases = [
            alias_drift(alias, epochs.get(alias), baselines.get(alias), groups)
            for alias in sorted(names)
        ]
        return EvalSummary(
            data=rows,
            aliases=aliases,
            queue_depth=self._service.queue_depth,
            decisions=self._service.decisions,
        )

    def _series(self, alias: str | None) -> list[ScoreSeries]:
        now = datetime.now(UTC)
        points = self._store.score_times(since=now - SERIES_WINDOW)
        if alias is not None:
            points = [p for p in points if p[0] == alias]
        if not points:
            return []
        first = min(p[2] for p in points).replace(tzinfo=UTC)
        width = max(60.0, (now - first).total_seconds() / SERIES_POINTS)
        buckets: defaultdict[tuple[str, str], defaultdict[int, list[float]]] = defaultdict(
            lambda: defaultdict(list)
        )
        for a, version, at, total in points:
            offset = (at.replace(tzinfo=UTC) - first).total_seconds()
            buckets[(a, version)][int(offset // width)].append(total)
        return [
            ScoreSeries(
                alias=a,
                version=version,
                points=[
                    ScorePoint(
                        at=first + timedelta(seconds=b * width),
                        mean=round(sum(v) / len(v), 4),
                        count=len(v),
                    )
                    for b, v in sorted(by_bucket.items())
                ],
            )
            for (a, version), by_bucket in sorted(buckets.items())
        ]

    async def samples(self, query: SampleQuery) -> SamplePage:
        rows = await asyncio.to_thread(self._store.samples, query)
        data = [SampleRecord(**row) for row in rows]
        full = len(data) == query.limit
        return SamplePage(data=data, next_before=data[-1].id if data and full else None)

    async def sample(self, sample_id: int) -> SampleRecord:
        row = await asyncio.to_thread(self._store.sample, sample_id)
        if row is None:
            raise NotFound(f"sample {sample_id} does not exist", param="sample_id")
        return SampleRecord(**row)

    async def dashboard_data(
        self, *, alias: str | None = None, sample_limit: int = 50
    ) -> DashboardData:
        summary = await self.summary()
        scores = await asyncio.to_thread(self._series, alias)
        samples = await self.samples(SampleQuery(alias=alias, limit=sample_limit))
        events = await asyncio.to_thread(self._events, 30)
        jobs = (
            await asyncio.to_thread(self.retrain_jobs, 20) if self.retrain_jobs is not None else []
        )
        if alias is not None:
            jobs = [job for job in jobs if job.alias == alias]
        traffic = self._traffic.rows()
        if alias is not None:
            summary.data = [row for row in summary.data if row.alias == alias]
            summary.aliases = [entry for entry in summary.aliases if entry.alias == alias]
            traffic = [row for row in traffic if row.model == alias]
        return DashboardData(
            generated_at=datetime.now(UTC),
            traffic=traffic,
            summary=summary,
            scores=scores,
            events=[
                EventRow(at=e.at, kind=e.kind, subject=e.subject, detail=e.detail) for e in events
            ],
            samples=samples,
            jobs=[LoopJob.model_validate(job, from_attributes=True) for job in jobs],
        )


def alias_drift(
    alias: str,
    epoch: str | None,
    baseline: dict[str, Any] | None,
    groups: dict[tuple[str, str, str], list[ScoredItem]],
) -> AliasDriftSummary:
    """The alias's drift entry from its baseline row (None without a rubric) and the latest
    scored sample of its epoch in ``groups`` ((alias, version, epoch) -> scores, oldest first)."""
    base = baseline or {}
    stats = (base.get("stats") or {}).get("baseline") or {}
    latest = max(
        (items[-1] for (a, _, e), items in groups.items() if a == alias and e == epoch and items),
        key=lambda item: item.score_id,
        default=None,
    )
    return AliasDriftSummary(
        alias=alias,
        epoch=epoch,
        drift_state=base.get("state", "baseline"),
        drift_statistic=base.get("statistic"),
        baseline_mean=stats.get("mean"),
        baseline_sigma=stats.get("sigma"),
        version=latest.version if latest is not None else None,
    )
