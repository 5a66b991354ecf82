"""The background tasks carrying this process's retrain jobs on, and cancelling them.

Each job runs as one asyncio task. A job is cancelled for its own sake when an operator
cancels it here, or when its record turns ``cancelled`` in the store (the cancel went through
another gateway process on the database: each task polls its record every ``poll`` seconds).
The job's code tells that from the gateway stopping by ``cancelled_for_the_job``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Iterator
from typing import Any

from adapters.jobs import JobStore

logger = logging.getLogger("tuneloop.loop")

CANCEL_POLL_S = 1.0  # how soon a job cancelled through another gateway process stops here


class JobTasks:
    def __init__(self, jobs: JobStore, *, poll: float = CANCEL_POLL_S) -> None:
        self._jobs = jobs
        self._poll = poll
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._cancelling: set[int] = set()

    def start(self, job_id: int, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(self._watched(job_id, work), name=f"job-{job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda _t: self._forget(job_id))

    def here(self, job_id: int) -> bool:
        """Whether this process carries the job on."""
        return job_id in self._tasks

    def cancelled_for_the_job(self, job_id: int) -> bool:
        """Inside the job's task: its cancellation is the job's (not the gateway stopping)."""
        return job_id in self._cancelling

    @contextlib.contextmanager
    def cancelling(self, job_id: int) -> Iterator[None]:
        """Around the write that cancels the job: marked first, so the job's own next write,
        meeting the cancelled record, reads as the cancel; then its task is cancelled."""
        task = self._tasks.get(job_id)
        if task is not None:
            self._cancelling.add(job_id)
        try:
            yield
        except BaseException:
            self._cancelling.discard(job_id)
            raise
        if task is not None:
            task.cancel()

    async def wait(self, job_id: int) -> None:
        """Until the job's task is done (tests, the CLI's --wait)."""
        task = self._tasks.get(job_id)
        if task is not None:
            await asyncio.shield(task)

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _watched(self, job_id: int, work: Coroutine[Any, Any, None]) -> None:
        watch = asyncio.create_task(self._watch(job_id, asyncio.current_task()))
        try:
            await work
        finally:
            watch.cancel()

    async def _watch(self, job_id: int, task: asyncio.Task[Any] | None) -> None:
        """Cancel ``task`` once the job is cancelled in the store (through another process)."""
        while task is not None:
            await asyncio.sleep(self._poll)
            try:
                current = await asyncio.to_thread(self._jobs.get, job_id)
            except Exception as exc:  # read again at the next poll
                logger.warning("event=job_poll_failed job=%d error=%s", job_id, type(exc).__name__)
                continue
            if current.state == "cancelled":
                self._cancelling.add(job_id)
                task.cancel()
                return

    def _forget(self, job_id: int) -> None:
        self._tasks.pop(job_id, None)
        self._cancelling.discard(job_id)


__all__ = ["CANCEL_POLL_S", "JobTasks"]
