"""Scheduled jobs on two gateways sharing one database run once per tick, not once per gateway."""

from __future__ import annotations

import asyncio

from eval.store import EvalStore
from gateway.db import create_db_engine
from gateway.evaluation.scheduler import LeasedScheduler


def test_a_job_scheduled_on_two_gateways_runs_once_per_tick(database_url: str) -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        runs: list[str] = []
        schedulers = []
        for _ in range(2):  # two processes: each its own engine and store on the same database
            scheduler = LeasedScheduler(EvalStore(create_db_engine(database_url)))

            async def job(holder: str = scheduler.holder) -> None:
                runs.append(holder)

            scheduler.add("drift_check", job, every=0.5)
            schedulers.append(scheduler)
        for scheduler in schedulers:
            scheduler.start()
        await asyncio.sleep(3.2)
        for scheduler in schedulers:
            scheduler.shutdown()
        return runs, [s.holder for s in schedulers]

    runs, holders = asyncio.run(scenario())
    # Six ticks in 3.2 s on each scheduler: twelve runs without the lease, six with it.
    assert 4 <= len(runs) <= 7, runs
    assert set(runs) <= set(holders)
