"""The loop's gateway-side parts that need no engine: production candidates, the shadow
mirror's bookkeeping (bounded, failures counted, never raised into a request), and which
retrain jobs a starting gateway fails when other gateway processes share its database."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, update

from adapters.dataset_registry import DatasetRegistry
from adapters.executors import LocalExecutor
from adapters.jobs import JobStore
from adapters.trainer_process import TrainerProcess
from gateway import presence as presence_module
from gateway.context import RequestContext
from gateway.db import create_db_engine, upgrade
from gateway.loop.candidates import from_confirmations, from_corrections, from_good_samples
from gateway.loop.service import LoopConfig, LoopParts, LoopService
from gateway.loop.shadow import ShadowMirror
from gateway.loop.tasks import JobTasks
from gateway.metrics import GatewayMetrics
from gateway.observers import Capture, FinishedRequest
from gateway.presence import Presence, ProcessTable
from gateway.presence_tables import ProcessRow, utcnow

ASKED = {"messages": [{"role": "system", "content": "Answer in JSON."},
                      {"role": "user", "content": "Ana is 30 and lives in Rome."}]}  # fmt: skip


def test_corrections_become_the_answer_to_their_request() -> None:
    rows = [
        {"request_id": "r1", "correction": ' {"name": "Ana"} ', "request": ASKED},
        {"request_id": "r2", "correction": "x", "request": None},  # not sampled: no input
        {"request_id": "r3", "correction": "  ", "request": ASKED},  # nothing to learn
    ]
    [candidate] = from_corrections(rows)
    assert candidate.source == "feedback:r1"
    assert candidate.conversation[-1] == {"role": "assistant", "content": '{"name": "Ana"}'}
    assert candidate.conversation[:-1] == ASKED["messages"]


SIMILAR = {"name": "close", "type": "reference_similarity", "passed": True}
SCHEMA = {"name": "schema", "type": "json_schema", "passed": True}


def test_good_samples_keep_their_answer_and_drop_text_completions() -> None:
    rows = [
        {"request_id": "s1", "response": '{"name": "Ana"}', "request": ASKED,
         "checks": [SCHEMA, SIMILAR]},
        {"request_id": "s2", "response": "ok", "request": {"prompt": "Say ok"},
         "checks": [SIMILAR]},
    ]  # fmt: skip
    [candidate] = from_good_samples(rows)
    assert candidate.source == "sample:s1" and candidate.conversation[-1]["role"] == "assistant"


def test_only_answers_a_content_check_vouched_for_become_candidates() -> None:
    """A format-only pass ("Kyre" for Kyoto is valid JSON) never feeds the next dataset."""
    wrong = {**SIMILAR, "passed": False}
    judged = {"name": "judge", "type": "llm_judge", "passed": True}
    rows = [
        {"request_id": "format-only", "response": '{"city": "Kyre"}', "request": ASKED,
         "checks": [SCHEMA]},
        {"request_id": "content-failed", "response": '{"city": "Kyre"}', "request": ASKED,
         "checks": [SCHEMA, wrong, judged]},
        {"request_id": "judged", "response": '{"city": "Kyoto"}', "request": ASKED,
         "checks": [SCHEMA, judged]},
        {"request_id": "unchecked", "response": '{"city": "Kyoto"}', "request": ASKED},
    ]  # fmt: skip
    assert [c.source for c in from_good_samples(rows)] == ["sample:judged"]


def test_confirmed_answers_become_candidates_whatever_the_rubric() -> None:
    """A human's confirmation vouches for the content where a format-only rubric cannot."""
    rows = [
        {"request_id": "c1", "response": ' {"city": "Kyoto"} ', "request": ASKED},
        {"request_id": "c2", "response": "", "request": ASKED},  # nothing was answered
        {"request_id": "c3", "response": "{}", "request": {"prompt": "text completion"}},
    ]
    [candidate] = from_confirmations(rows)
    assert candidate.source == "confirmed:c1"
    assert candidate.conversation == [
        *ASKED["messages"],
        {"role": "assistant", "content": '{"city": "Kyoto"}'},
    ]


def finished(request_id: str, alias: str = "extract") -> FinishedRequest:
    ctx = RequestContext(request_id=request_id, model=alias, version=f"{alias}@v1")
    ctx.status = 200
    return FinishedRequest("chat", ctx, Capture(alias=alias, version=f"{alias}@v1",
                                                request=ASKED))  # fmt: skip


def test_shadow_mirrors_only_the_watched_alias_and_counts_failures() -> None:
    counted: list[tuple[str, str]] = []
    calls: list[str] = []

    async def mirror(alias: str, challenger: str, messages: list[dict]) -> float | None:
        calls.append(challenger)
        if len(calls) == 2:
            raise RuntimeError("challenger down")
        return 0.75

    async def run() -> tuple[list[float], int]:
        shadow = ShadowMirror(mirror, count=lambda a, r: counted.append((a, r)), max_in_flight=8)
        shadow.watch("extract", "extract@v3", share=1.0)
        for n in range(3):
            shadow(finished(f"r{n}"))
        shadow(finished("other", alias="chat"))  # not watched
        await asyncio.sleep(0.05)
        scores, failures = shadow.stop("extract")
        shadow(finished("after-stop"))
        await shadow.close()
        return scores, failures

    scores, failures = asyncio.run(run())
    assert calls == ["extract@v3"] * 3
    assert scores == [0.75, 0.75] and failures == 1
    assert sorted(r for _, r in counted) == ["failed", "scored", "scored"]


def test_shadow_skips_when_its_slots_are_full() -> None:
    counted: list[str] = []
    release = asyncio.Event()

    async def slow(alias: str, challenger: str, messages: list[dict]) -> float | None:
        await release.wait()
        return 1.0

    async def run() -> None:
        shadow = ShadowMirror(slow, count=lambda a, r: counted.append(r), max_in_flight=1)
        shadow.watch("extract", "extract@v3", share=1.0)
        shadow(finished("r1"))
        await asyncio.sleep(0.01)  # r1 holds the only slot
        shadow(finished("r2"))
        release.set()
        await asyncio.sleep(0.01)
        await shadow.close()

    asyncio.run(run())
    assert counted.count("skipped") == 1 and counted.count("scored") == 1


async def no_mirror(alias: str, challenger: str, messages: list[dict]) -> float | None:
    return None


def set_heartbeat_age(engine: Engine, process_id: str, seconds: float) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(ProcessRow)
            .where(ProcessRow.id == process_id)
            .values(heartbeat_at=utcnow() - timedelta(seconds=seconds))
        )


def test_a_starting_gateway_fails_only_the_jobs_nobody_carries_on(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs of live processes survive; jobs with no owner or a long-gone one fail at once;
    a job whose process died just before (still looking live) fails once that process has
    been silent for ``GONE_AFTER_WINDOWS`` liveness windows (merely slow to beat, it keeps
    its job), and so does one whose process stops later. The loop's other parts are not used
    by its start and stop."""
    monkeypatch.setattr(presence_module, "MIN_MAX_AGE_S", 1.0)  # the liveness window
    engines = [create_db_engine(database_url) for _ in range(2)]
    upgrade(engines[0])
    store = JobStore(engines[0])

    async def run() -> None:
        other = Presence(ProcessTable(engines[1]), interval=0.05)  # another live gateway
        await other.start()
        theirs = store.create("a", trigger="drift", owner=other.process_id)
        store.create("b", trigger="manual")  # made before jobs had owners
        store.create("c", trigger="drift", owner="stopped-long-ago")
        table = ProcessTable(engines[0])
        table.join("just-died", 7, "h")  # died a moment ago: its heartbeat is still fresh
        dying = store.create("d", trigger="drift", owner="just-died")
        store.transition(dying.id, "running")

        me = Presence(table, interval=0.05)
        await me.start()
        unused: Any = None  # start and close touch neither adapters, evaluation nor serving
        parts = LoopParts(
            jobs=store, datasets=DatasetRegistry(engines[0], tmp_path / "datasets"),
            executor=LocalExecutor(TrainerProcess()), adapters=unused, evaluation=unused,
            eval_jobs=unused,
            shadow=ShadowMirror(no_mirror, count=lambda alias, result: None),
            serving=lambda: unused,
        )  # fmt: skip
        loop = LoopService(
            parts, config=LoopConfig(), work_dir=tmp_path, metrics=GatewayMetrics(), presence=me
        )
        await loop.start()
        states = {j.alias: (j.state, j.error) for j in store.jobs()}
        assert states["b"] == states["c"] == ("failed", "gateway restarted")
        assert states["a"] == ("queued", None) and states["d"] == ("running", None)

        set_heartbeat_age(engines[0], "just-died", 2.0)  # past the 1 s window: slow, not gone
        await asyncio.sleep(2.5)  # two sweeps
        assert store.get(dying.id).state == "running", "a slow owner keeps its job"
        set_heartbeat_age(engines[0], "just-died", 20.0)  # silent for 20 windows: gone
        deadline = time.monotonic() + 30
        while store.get(dying.id).state == "running" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        after = store.get(dying.id)
        assert (after.state, after.error) == ("failed", "its gateway process stopped")
        assert store.get(theirs.id).state == "queued", "its owner is still beating"
        await other.close()  # that gateway stops for good; no other starts after it
        while store.get(theirs.id).state == "queued" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        after = store.get(theirs.id)
        assert (after.state, after.error) == ("failed", "its gateway process stopped")
        await loop.close()
        await me.close()
        await other.close()

    try:
        asyncio.run(asyncio.wait_for(run(), timeout=60))
    finally:
        for engine in engines:
            engine.dispose()


def test_a_job_cancelled_through_another_process_stops_here(database_url: str) -> None:
    """The task carrying a job on stops once another gateway process (here: its own engine on
    the same database) records the job cancelled, and knows it was cancelled for the job's
    sake; a job that ends on its own is left alone by the watch."""
    here, there = (JobStore(create_db_engine(database_url)) for _ in range(2))
    cancelled, finished = here.create("a", trigger="drift"), here.create("b", trigger="drift")

    async def run() -> None:
        tasks = JobTasks(here, poll=0.05)
        seen: list[bool] = []

        async def forever() -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                seen.append(tasks.cancelled_for_the_job(cancelled.id))
                raise

        async def quick() -> None:
            await asyncio.sleep(0.2)  # outlives a few polls of its own record
            here.transition(finished.id, "running")

        tasks.start(cancelled.id, forever())
        tasks.start(finished.id, quick())
        assert tasks.here(cancelled.id) and not tasks.cancelled_for_the_job(cancelled.id)
        await tasks.wait(finished.id)  # not cancelled by its own watch
        there.transition(cancelled.id, "cancelled", error="cancelled by an operator")
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(tasks.wait(cancelled.id), timeout=10)
        assert seen == [True] and not tasks.here(cancelled.id)

    asyncio.run(run())
