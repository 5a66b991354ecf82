"""Continuous evaluation's API logic: rubrics, feedback, the read API, acknowledgements."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapters.registry import EventRecord
from gateway.evaluation.jobs import EvalJobs
from gateway.evaluation.protocol import FeedbackRecord, FeedbackRequest, RubricRecord
from gateway.evaluation.service import EvalService
from gateway.evaluation.views import EvalViews
from gateway.exceptions import NotFound
from gateway.traffic import TrafficWindow


class EvalServing(EvalViews):
    """What the routes (admin, feedback, dashboard) call; one instance on ``app.state.eval``."""

    def __init__(
        self,
        service: EvalService,
        jobs: EvalJobs,
        traffic: TrafficWindow,
        events: Callable[[int], list[EventRecord]],
        *,
        reports_dir: Path,
    ) -> None:
        super().__init__(service, traffic, events)
        self.service = service
        self.jobs = jobs
        self._reports_dir = reports_dir

    async def put_rubric(self, alias: str, source: str | dict[str, Any]) -> RubricRecord:
        return await self.service.put_rubric(alias, source)

    def get_rubric(self, alias: str) -> RubricRecord:
        return self.service.rubric(alias)

    async def feedback(self, body: FeedbackRequest) -> FeedbackRecord:
        return await self.service.feedback(body)

    async def acknowledge(self, alias: str) -> dict[str, str]:
        self.service.rubric(alias)  # 404 when the alias has no rubric (so no baseline)
        await self.jobs.restart_baseline(alias, reason="acknowledged")
        return {"alias": alias, "drift_state": "baseline"}

    async def drift_check(self) -> list[dict[str, Any]]:
        return [
            {"alias": d.alias, "epoch": d.epoch, "version": d.version, "state": d.result.state,
             "statistic": d.result.statistic, "reason": d.result.reason}
            for d in await self.jobs.drift_check()
        ]  # fmt: skip

    async def write_report(self) -> dict[str, Any]:
        summary = await self.summary()
        path = await self.jobs.report(summary.model_dump(mode="json"))
        return {"name": path.stem}

    async def reports(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.jobs.reports)

    async def report_file(self, name: str) -> Path:
        """A report file by name (``eval-2026-11-29.json`` or ``.md``), never outside the dir."""
        path = (self._reports_dir / name).resolve()
        if path.parent != self._reports_dir.resolve() or not path.is_file():
            raise NotFound(f"report '{name}' does not exist", param="name")
        return path
