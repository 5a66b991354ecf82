"""Orphaned retrain jobs: active jobs whose owner gateway process is gone, and failing them.

A retrain job's trainer, gate and canary run inside the gateway process that created it (the
job's ``owner``, its ``Presence`` id). When that process stops (a restart, a crash, a host
that went away), nothing will ever carry the job on, yet as an active job it still holds its
alias in the job store: no drift alarm, schedule or operator could start another retrain of
that alias. So an orphaned job is failed, with the reason as its error, which frees the alias.

Two moments find them: a pass when the loop starts (every job not owned by a live process,
including jobs made before jobs had owners), and a sweep once per liveness window for
processes that stopped since (one that died just before this one started, still looking live
at the first pass, or one that died later with no gateway starting after it). Without a
``presence`` (one process on the database) the start pass fails every active job and there
is no sweep.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.exc import SQLAlchemyError

from adapters.jobs import JobStore
from gateway.presence import Presence

logger = logging.getLogger("tuneloop.loop")  # the loop's logger: its lines read as before


class OrphanSweeper:
    """Fails the retrain jobs in ``jobs`` whose owner is not among ``presence``'s live
    processes: once at ``start``, then every ``presence.max_age`` seconds until ``close``."""

    def __init__(self, jobs: JobStore, presence: Presence | None) -> None:
        self._jobs = jobs
        self._presence = presence
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """The start pass (a database error here fails the start), then the periodic sweep."""
        presence = self._presence
        await self._fail_orphans(
            "gateway restarted", await self._not_gone(presence) if presence is not None else None
        )
        if presence is not None:
            self._task = asyncio.create_task(self._sweep(presence), name="loop-sweep")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _sweep(self, presence: Presence) -> None:
        """Every liveness window, fail the active jobs whose process has stopped since."""
        while True:
            await asyncio.sleep(presence.max_age)
            try:
                await self._fail_orphans(
                    "its gateway process stopped", await self._not_gone(presence)
                )
            except SQLAlchemyError as exc:  # tried again at the next window
                logger.warning("event=jobs_sweep_failed error=%s", type(exc).__name__)

    @staticmethod
    async def _not_gone(presence: Presence) -> set[str]:
        """Owners whose jobs are kept: live processes and those only slow to beat (a process
        starved for a few seconds is still training; ``Presence.not_gone``)."""
        return {record.id for record in await presence.not_gone()} | {presence.process_id}

    async def _fail_orphans(self, reason: str, live: set[str] | None) -> None:
        failed = await asyncio.to_thread(
            self._jobs.fail_interrupted, reason=reason, live_owners=live
        )
        if failed:
            logger.warning("event=jobs_interrupted ids=%s reason=%r",
                           ",".join(map(str, failed)), reason)  # fmt: skip


__all__ = ["OrphanSweeper"]
