"""A training job's progress, read from its trainer's step lines as they are written.

Each ``tuneloop-step`` line (``adapters.progress``) sets the alias's step and loss gauges and
becomes the job's ``detail.progress``, written off the event loop with at most one write in
flight (a later step's figures replace a skipped one; the job's next transition writes the
last).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from adapters.jobs import JobStore
from adapters.progress import parse_step_line
from gateway.metrics import GatewayMetrics

logger = logging.getLogger("tuneloop.loop")


class ProgressRecorder:
    """``on_line`` for one job's trainer; ``timings`` is the job's detail, updated in place."""

    def __init__(
        self, jobs: JobStore, metrics: GatewayMetrics, *, job_id: int, alias: str,
        timings: dict[str, Any],
    ) -> None:  # fmt: skip
        self._jobs, self._job_id, self._timings = jobs, job_id, timings
        self._step = metrics.child(metrics.loop_train_step, alias)
        self._loss = metrics.child(metrics.loop_train_loss, alias)
        self._writes: set[asyncio.Task[None]] = set()

    def on_line(self, line: str) -> None:
        progress = parse_step_line(line)
        if progress is None:
            return
        self._step.set(progress.step)
        if progress.loss is not None:
            self._loss.set(progress.loss)
        self._timings["progress"] = progress.model_dump()
        if not self._writes:
            task = asyncio.create_task(self._write(dict(self._timings)))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def close(self) -> None:
        """Training is over: the step gauge drops to 0 and the pending write lands."""
        self._step.set(0)
        await asyncio.gather(*self._writes, return_exceptions=True)

    async def _write(self, detail: dict[str, Any]) -> None:
        try:
            await asyncio.to_thread(self._jobs.update, self._job_id, detail=detail)
        except Exception:  # progress is best effort; the job's own state is written elsewhere
            logger.exception("event=loop_progress_write_failed job=%d", self._job_id)
