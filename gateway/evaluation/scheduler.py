"""Scheduled evaluation jobs on APScheduler 3's ``AsyncIOScheduler``, one process at a time.

Each run first takes a lease row in the shared database (``job_leases``); when several gateways
share a database, exactly one of them runs each job. A job that fails is logged in one line
and runs again at its next time; it never stops the scheduler.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from eval.store import EvalStore

logger = logging.getLogger("tuneloop.scheduler")


class LeasedScheduler:
    def __init__(self, store: EvalStore) -> None:
        self._store = store
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._scheduler = AsyncIOScheduler(timezone="UTC")

    def add(
        self,
        name: str,
        job: Callable[[], Awaitable[Any]],
        *,
        every: float | None = None,
        hour: int | None = None,
    ) -> None:
        """Run ``job`` every ``every`` seconds, or daily at ``hour`` (UTC)."""
        if every is not None:
            trigger: Any = IntervalTrigger(seconds=every)
            ttl = every * 0.9
        else:
            trigger, ttl = CronTrigger(hour=hour, minute=5), 3600.0
        self._scheduler.add_job(
            self._leased, trigger, args=(name, job, ttl), id=name, name=name,
            max_instances=1, coalesce=True, misfire_grace_time=None,
        )  # fmt: skip

    async def _leased(self, name: str, job: Callable[[], Awaitable[Any]], ttl: float) -> None:
        try:
            if not await asyncio.to_thread(self._store.try_lease, name, self.holder, ttl=ttl):
                logger.debug("event=job_skipped job=%s reason=lease_held_elsewhere", name)
                return
            await job()
        except Exception:  # logged; the job runs again at its next time
            logger.exception("event=job_failed job=%s", name)

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self) -> None:
        self._scheduler.shutdown(wait=False)
